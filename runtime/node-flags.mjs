/**
 * V8 flags for a Troupe node process. Troupe's launcher (`npm start`, `npx troupe`,
 * runtime/bin/troupe.mjs) starts the node with them, and so do the benchmark's node processes,
 * which stand for it. A program that embeds Troupe (`Troupe.start` in its own process) may pass
 * them to `node` too.
 *
 * --max-semi-space-size=8  V8's young generation grows to 16 MB per semi-space by default. A
 *   node with thousands of commands in flight keeps them alive across young collections either
 *   way, so the larger space buys little: measured here with 100k accounts, 8 MB cut peak RSS by
 *   ~40 MB (430-446 → 396 MB) for ~3% of throughput (within this machine's noise).
 */
export const NODE_FLAGS = ['--max-semi-space-size=8'];
