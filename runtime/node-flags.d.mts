/** V8 flags for a Troupe node process (node-flags.mjs). */
export declare const NODE_FLAGS: readonly string[];
