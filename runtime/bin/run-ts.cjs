'use strict';
// node runtime/bin/run-ts.cjs <script.ts> [args...]: run a TypeScript entry through tsx's
// require hook, in this thread. (`node --import tsx` runs tsx's ESM loader in a thread of its
// own on Node 20: one more V8 isolate, ~30 MB of memory.) The script must not use top-level await.
require('tsx/cjs');
const { resolve } = require('node:path');
const script = resolve(process.argv[2]);
process.argv.splice(1, 2, script);
require(script);
