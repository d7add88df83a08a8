/**
 * `troupe init [dir]`: a working app in a few files, so that a first actor is three commands:
 *
 *   npx troupe init my-app
 *   cd my-app && npm install
 *   npx troupe start
 *
 * The app: package.json (depends on troupe; `npm start`, `npm test`), troupe.config.mjs (the
 * node's options), actors/counter.js (one actor, plain JavaScript), test/counter.test.js (a
 * given/when/then test run by `node --test`, no other dev dependency), a README and .gitignore.
 */
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { InvalidOptionError } from '../errors.ts';

export interface ScaffoldOptions {
  /** The troupe version the app depends on (as `^version`). */
  troupeVersion: string;
  /** Write into a non-empty folder (files of the same name are overwritten). */
  force?: boolean;
}

function packageName(dir: string): string {
  const name = basename(dir).toLowerCase().replace(/[^a-z0-9._-]+/g, '-').replace(/^[._-]+/, '');
  return name === '' ? 'troupe-app' : name;
}

function files(dir: string, troupeVersion: string): Record<string, string> {
  const name = packageName(dir);
  return {
    'package.json': `${JSON.stringify({
      name,
      version: '0.1.0',
      private: true,
      type: 'module',
      scripts: { start: 'troupe start', test: 'node --test' },
      dependencies: { troupe: `^${troupeVersion}` },
    }, null, 2)}\n`,
    'troupe.config.mjs': `// Options of the Troupe node that \`npx troupe start\` runs in this folder.
// Paths are relative to this folder. Data goes to ./.troupe (or --data-dir / TROUPE_DATA_DIR).
export default {
  actors: ['./actors/counter.js'],
};
`,
    'actors/counter.js': `import { defineActor, reject } from 'troupe';

// One actor type: a counter per id. decide (commands) returns events; evolve (events) folds them into state.
export const counter = defineActor({
  type: 'Counter',
  initialState: () => ({ value: 0 }),
  commands: {
    Increment: (state, command) => {
      const by = command.by ?? 1;
      if (!Number.isInteger(by) || by < 1) reject('by-must-be-a-positive-integer', { by });
      return [{ type: 'Incremented', payload: { by } }];
    },
  },
  events: {
    Incremented: (state, event) => ({ value: state.value + event.by }),
  },
});
`,
    'test/counter.test.js': `import { test } from 'node:test';
import { given } from 'troupe/testing';
import { counter } from '../actors/counter.js';

test('Increment adds to the counter', () => {
  given(counter, [{ type: 'Incremented', payload: { by: 2 } }])
    .when('Increment', { by: 3 })
    .then([{ type: 'Incremented', payload: { by: 3 } }])
    .thenState({ value: 5 });
});

test('Increment refuses a negative step', () => {
  given(counter).when('Increment', { by: -1 }).thenRejects('by-must-be-a-positive-integer');
});
`,
    'README.md': `# ${name}

A [Troupe](https://www.npmjs.com/package/troupe) app: one actor, \`Counter\`, in actors/counter.js.
Run it with \`npm install\`, then \`npx troupe start\`; in another terminal: \`npx troupe send Counter c-1 Increment '{"by":2}'\`.
Read it back with \`npx troupe state Counter c-1\` and \`npx troupe history Counter c-1\`; \`npm test\` runs test/counter.test.js.
`,
    '.gitignore': 'node_modules/\n.troupe/\n',
  };
}

/** Write the app into `dir` (created when missing). Refuses a non-empty folder unless `force`. */
export async function scaffold(dir: string, opts: ScaffoldOptions): Promise<{ files: string[] }> {
  const root = resolve(dir);
  if (typeof opts.troupeVersion !== 'string' || opts.troupeVersion === '') {
    throw new InvalidOptionError(`scaffold needs the troupe version the app depends on, got ${JSON.stringify(opts.troupeVersion)}`, { field: 'troupeVersion' });
  }
  let existing: string[] = [];
  try {
    existing = await readdir(root);
  } catch (e) {
    if ((e as { code?: string }).code !== 'ENOENT') throw e;
  }
  if (existing.length > 0 && opts.force !== true) {
    throw new InvalidOptionError(`${root} is not empty (${existing.slice(0, 3).join(', ')}${existing.length > 3 ? ', …' : ''}): choose a new folder, or pass --force to write into it`, { field: 'dir' });
  }
  const written: string[] = [];
  for (const [rel, text] of Object.entries(files(root, opts.troupeVersion))) {
    const path = join(root, rel);
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, text);
    written.push(rel);
  }
  return { files: written };
}
