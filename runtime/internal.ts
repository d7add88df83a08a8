// `troupe/internal`: engine parts for Troupe's own tests, bench and tools; no stability promise.
// (Minimal entry point; the public-surface work defines its final list.)
export * from './index.ts';
export { dataPaths, DATA_DIR_ENV, DEFAULT_DATA_ROOT } from './cli/paths.ts';
export type { DataPaths } from './cli/paths.ts';
export { scaffold } from './cli/init.ts';
export type { ScaffoldOptions } from './cli/init.ts';
