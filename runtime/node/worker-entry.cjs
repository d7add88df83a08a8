// Piscina's entry for worker threads in a source checkout (the installed package runs the
// compiled worker.js instead: see pool.ts). On Node 20 a worker thread gets tsx's require hook but
// not its ESM loader, and Piscina hides a load error behind a retry with import(); loading the
// TypeScript worker through require here lets the real error (a missing module, a throw at load
// time) reach the caller.
'use strict';
require('tsx/cjs');
module.exports = require('./worker.ts').default;
