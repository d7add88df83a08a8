// Piscina's entry for worker threads. On Node 20 a worker thread gets tsx's require hook but
// not its ESM loader, and Piscina hides a load error behind a retry with import(); loading the
// TypeScript worker through require here lets the real error (a missing module, a throw at load
// time) reach the caller.
'use strict';
require('tsx/cjs');
module.exports = require('./worker.ts').default;
