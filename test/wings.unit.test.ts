import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { checkWings, parseImports, readRuntimeTree, WING_RULES, type SourceFile, type Violation } from './helpers/wings.ts';

const RUNTIME = fileURLToPath(new URL('../runtime/', import.meta.url));

function tree(files: Record<string, string>): SourceFile[] {
  return Object.entries(files).map(([path, text]) => ({ path, text }));
}

function kinds(violations: Violation[]): string[] {
  return violations.map((v) => `${v.kind} ${v.file}`);
}

describe('wing import rules', () => {
  it('hold for every file of runtime/', () => {
    const files = readRuntimeTree(RUNTIME);
    expect(files.length).toBeGreaterThan(40);
    expect(files.some((f) => f.path === 'node/system.ts')).toBe(true);
    const violations = checkWings(files);
    // One line per violation, so a failure reads as a list of what to fix.
    expect(violations.map((v) => v.message).join('\n')).toBe('');
  });

  it('name every wing of runtime/ in the rule table, and each wing says in its README what it owns and may import', () => {
    const wings = readdirSync(RUNTIME, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort();
    expect(wings.filter((w) => WING_RULES.may[w] === undefined)).toEqual([]);
    const problems: string[] = [];
    for (const wing of wings) {
      const readme = join(RUNTIME, wing, 'README.md');
      if (!existsSync(readme)) { problems.push(`${wing}/README.md is missing`); continue; }
      const [title, blank, rule] = readFileSync(readme, 'utf8').split('\n');
      if (!title!.startsWith(`# ${wing}/ — `)) problems.push(`${wing}/README.md: the first line is not "# ${wing}/ — <what it owns>"`);
      if (blank !== '' || !rule!.startsWith('May import: ')) problems.push(`${wing}/README.md: the second paragraph is not "May import: ..."`);
    }
    expect(problems).toEqual([]);
  });

  it('parse every import form, types included, and skip comments', () => {
    const refs = parseImports([
      `import { a } from './a.ts';`,
      `import type { B } from "../b.ts";`,
      `export { c } from './c.ts';`,
      `export * from './d.ts';`,
      `import {`,
      `  e,`,
      `  type E,`,
      `} from './e.ts';`,
      `import './side.ts';`,
      `const f = await import('./f.ts');`,
      `type G = typeof import('@g/g').G;`,
      `const h = require('./h.cjs');`,
      `// import { no } from './comment.ts';`,
      `/* import('./block.ts') */`,
      `const s = "import x from './string.ts'";`,
      `const t = 'see: import { a } from "./quoted.ts"', u = \`require('./template.ts')\`;`,
      `const v = "it's \\" import('./escaped.ts')";`,
    ].join('\n'));
    expect(refs.map((r) => `${r.line} ${r.specifier}`)).toEqual([
      '1 ./a.ts', '2 ../b.ts', '3 ./c.ts', '4 ./d.ts', '8 ./e.ts', '9 ./side.ts', '10 ./f.ts', '11 @g/g', '12 ./h.cjs',
    ]);
  });

  it('refuse a root file that imports a wing', () => {
    const violations = checkWings(tree({
      'options.ts': `import type { LogLevel } from './ops/log.ts';`,
      'ops/log.ts': `export type LogLevel = 'info';`,
    }));
    expect(kinds(violations)).toEqual(['wing options.ts']);
    expect(violations[0]!.message).toContain('options.ts:1 imports ops/log.ts');
  });

  it('let the entry points import any wing', () => {
    expect(checkWings(tree({
      'index.ts': `export { Troupe } from './node/system.ts';`,
      'node/system.ts': `export class Troupe {}`,
    }))).toEqual([]);
  });

  it('refuse journal/ importing contracts/', () => {
    const violations = checkWings(tree({
      'journal/store.ts': `import { sealSnapshot } from '../contracts/sensitive.ts';`,
      'contracts/sensitive.ts': `export const sealSnapshot = 1;`,
    }));
    expect(kinds(violations)).toEqual(['wing journal/store.ts']);
  });

  it('let a wing import only the named files of a wing when its rule names files', () => {
    const violations = checkWings(tree({
      'contracts/sensitive.ts': `import { encode } from '../journal/codec.ts';\nimport { Store } from '../journal/store.ts';`,
      'journal/codec.ts': `export const encode = 1;`,
      'journal/store.ts': `export class Store {}`,
    }));
    expect(violations.map((v) => `${v.kind} ${v.file}:${v.line}`)).toEqual(['wing contracts/sensitive.ts:2']);
  });

  it('refuse remote/client.ts importing node/', () => {
    const violations = checkWings(tree({
      'remote/client.ts': `import type { Command } from '../node/system.ts';`,
      'node/system.ts': `export type Command = {};`,
    }));
    expect(kinds(violations)).toEqual(['wing remote/client.ts']);
  });

  it('report a cycle between wings, even when each import is allowed on its own', () => {
    const violations = checkWings(tree({
      'node/system.ts': `import { CommandService } from '../remote/service.ts';`,
      'remote/service.ts': `import { tracing } from '../ops/tracing.ts';`,
      'ops/tracing.ts': `import type { Troupe } from '../node/system.ts';`,
    }), {
      may: { node: [{ wing: 'remote' }], remote: [{ wing: 'ops' }], ops: [{ wing: 'node' }] },
      entryPoints: [], natsFiles: [], telemetryWings: ['ops'],
    });
    expect(violations.map((v) => v.kind)).toEqual(['cycle']);
    expect(violations[0]!.message).toMatch(/node -> remote .*; remote -> ops .*; ops -> node /);
  });

  it('report a cycle of two wings that import each other', () => {
    const violations = checkWings(tree({
      'node/system.ts': `import { CommandService } from '../remote/service.ts';`,
      'remote/service.ts': `import type { Troupe } from '../node/system.ts';`,
    }));
    expect(kinds(violations)).toEqual(['wing remote/service.ts', 'cycle node/system.ts']);
  });

  it('refuse @nats-io/* in a file that does not talk to NATS', () => {
    const violations = checkWings(tree({
      'consumers/projection.ts': `import type { NatsConnection } from '@nats-io/transport-node';`,
      'journal/journal.ts': `import { connect } from '@nats-io/transport-node';`,
    }));
    expect(kinds(violations)).toEqual(['nats consumers/projection.ts']);
  });

  it('refuse pino and OpenTelemetry outside ops/', () => {
    const violations = checkWings(tree({
      'node/worker.ts': `import { pino } from 'pino';`,
      'consumers/pipeline.ts': `const m = await import('@opentelemetry/api');`,
      'ops/log.ts': `import { pino } from 'pino';`,
    }));
    expect(kinds(violations)).toEqual(['telemetry node/worker.ts', 'telemetry consumers/pipeline.ts']);
  });

  it('refuse an import that leaves runtime/', () => {
    const violations = checkWings(tree({ 'node/system.ts': `import { account } from '../../actors/account.ts';` }));
    expect(kinds(violations)).toEqual(['outside node/system.ts']);
  });
});
