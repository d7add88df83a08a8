/**
 * The wing import rules of runtime/, as a check over source text.
 *
 * A wing is the first folder under runtime/ (node/, journal/, ...); files directly in runtime/
 * are the root. Each wing may import only the wings its rule names (some only certain files of
 * them); no two wings may import each other, directly or through others; only the files that
 * talk to NATS import `@nats-io/*`; only ops/ imports OpenTelemetry and pino; nothing in
 * runtime/ reaches outside it (actors/, test/, bench/).
 *
 * Every import form counts, types included: `import`, `import type`, `export ... from`,
 * side-effect `import 'x'`, dynamic `import('x')` (also inside `typeof import('x')`) and
 * `require('x')`. Comments, and strings that are not specifiers, are skipped.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, posix, relative } from 'node:path';

export interface SourceFile {
  /** Path relative to runtime/, with forward slashes: 'node/shard.ts', 'options.ts'. */
  path: string;
  text: string;
}

export interface ImportRef {
  specifier: string;
  line: number;
}

export type ViolationKind = 'wing' | 'outside' | 'cycle' | 'nats' | 'telemetry' | 'unresolved';

export interface Violation {
  kind: ViolationKind;
  file: string;
  line: number;
  specifier: string;
  message: string;
}

/** One allowed target: a whole wing, or only some of its files. */
export interface Allowed {
  wing: string;
  files?: readonly string[];
}

export interface WingRules {
  /** wing -> what it may import; `'*'` for anything inside runtime/. A wing absent here may import only root. */
  may: Readonly<Record<string, readonly Allowed[] | '*'>>;
  /** The package's entry points (`troupe`, `troupe/internal`, `troupe/ops`, `troupe/testing`): exempt from the wing rule and the cycle check. */
  entryPoints: readonly string[];
  /** The files that talk to NATS: the only ones that may import `@nats-io/*`. */
  natsFiles: readonly string[];
  /** Wings whose files may import `@opentelemetry/*` and pino. */
  telemetryWings: readonly string[];
}

export const ROOT = 'root';

export const WING_RULES: WingRules = {
  may: {
    root: [],
    node: [{ wing: 'journal' }, { wing: 'contracts' }, { wing: 'ops' }, { wing: 'remote', files: ['remote/service.ts', 'remote/ops-service.ts'] },
      // The operator console (node/console.ts) shows consumers and dead letters, and replays them.
      { wing: 'consumers', files: ['consumers/dlq.ts', 'consumers/overview.ts'] }],
    journal: [],
    remote: [{ wing: 'journal', files: ['journal/codec.ts'] }, { wing: 'ops' }],
    contracts: [{ wing: 'journal', files: ['journal/codec.ts'] }],
    consumers: [{ wing: 'journal' }, { wing: 'contracts' }, { wing: 'ops' }],
    ops: [],
    cli: '*',
    testing: '*',
    // The plain-JS launcher behind the `troupe` bin: it runs the CLI.
    bin: '*',
  },
  entryPoints: ['index.ts', 'internal.ts', 'ops/index.ts', 'testing/index.ts'],
  natsFiles: [
    'journal/journal.ts',
    'journal/leases.ts',
    'journal/shared-checkpoints.ts',
    'journal/shard-needs.ts',
    'node/ownership.ts',
    'node/membership.ts',
    'remote/service.ts',
    'remote/client.ts',
    'remote/ops-service.ts',
    'consumers/overview.ts',
    'contracts/keystore.ts',
    'consumers/consume.ts',
    'consumers/durables.ts',
    'consumers/dlq.ts',
  ],
  telemetryWings: ['ops'],
};

export function wingOf(path: string): string {
  const slash = path.indexOf('/');
  return slash < 0 ? ROOT : path.slice(0, slash);
}

/** A string that starts here is a module specifier (after `from`, `import`, `import(`, `require(`). */
const SPECIFIER_BEFORE = /(?:\bfrom|\bimport|\bimport\s*\(|\brequire\s*\()\s*$/;

/**
 * Source text with comments blanked out, and the contents of every string that is not a module
 * specifier (newlines kept, so offsets still give line numbers).
 */
function stripComments(text: string): string {
  let out = '';
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text[i]!;
    const next = text[i + 1];
    if (c === '/' && next === '/') {
      while (i < n && text[i] !== '\n') { out += ' '; i++; }
    } else if (c === '/' && next === '*') {
      while (i < n && !(text[i] === '*' && text[i + 1] === '/')) { out += text[i] === '\n' ? '\n' : ' '; i++; }
      out += '  ';
      i += 2;
    } else if (c === '"' || c === "'" || c === '`') {
      const quote = c;
      const keep = SPECIFIER_BEFORE.test(out.slice(-40));
      out += c;
      i++;
      while (i < n && text[i] !== quote) {
        if (quote !== '`' && text[i] === '\n') break;
        const escaped = text[i] === '\\' && i + 1 < n;
        const len = escaped ? 2 : 1;
        for (let k = 0; k < len; k++) {
          const ch = text[i]!;
          out += keep ? ch : ch === '\n' ? '\n' : ' ';
          i++;
        }
      }
      if (i < n && text[i] === quote) { out += quote; i++; }
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

const IMPORT_PATTERNS: readonly RegExp[] = [
  // import x from 'a'; import type { X } from 'a'; export { x } from 'a'; export * from 'a'
  /(?:^|[\s;}])(?:import|export)(?:\s+type)?\s*(?:[\w$*{][^;'"`]*?)\bfrom\s*(['"])([^'"\n]+)\1/g,
  // import 'a'
  /(?:^|[\s;}])import\s*(['"])([^'"\n]+)\1/g,
  // import('a'), typeof import('a')
  /\bimport\s*\(\s*(['"`])([^'"`\n]+)\1/g,
  // require('a')
  /\brequire\s*\(\s*(['"`])([^'"`\n]+)\1/g,
];

/** Every module specifier a file imports, with its line. */
export function parseImports(text: string): ImportRef[] {
  const code = stripComments(text);
  const found = new Map<number, ImportRef>();
  for (const pattern of IMPORT_PATTERNS) {
    pattern.lastIndex = 0;
    for (let m = pattern.exec(code); m !== null; m = pattern.exec(code)) {
      const specifier = m[2]!;
      const at = m.index + m[0].lastIndexOf(specifier);
      if (found.has(at)) continue;
      let line = 1;
      for (let k = 0; k < at; k++) if (code.charCodeAt(k) === 10) line++;
      found.set(at, { specifier, line });
    }
  }
  return [...found.entries()].sort((a, b) => a[0] - b[0]).map(([, ref]) => ref);
}

function allows(rule: readonly Allowed[] | '*' | undefined, target: string): boolean {
  if (rule === '*') return true;
  const wing = wingOf(target);
  if (wing === ROOT) return true;
  return (rule ?? []).some((a) => a.wing === wing && (a.files === undefined || a.files.includes(target)));
}

function describe(rule: readonly Allowed[] | '*' | undefined): string {
  if (rule === '*') return 'anything';
  if (rule === undefined || rule.length === 0) return 'nothing of the wings';
  const parts = ['root', ...(rule ?? []).map((a) => (a.files ? `${a.wing}/ (${a.files.map((f) => posix.basename(f)).join(', ')})` : `${a.wing}/`))];
  return parts.join(', ');
}

/** The violations of the rules in a set of runtime/ files. */
export function checkWings(files: readonly SourceFile[], rules: WingRules = WING_RULES): Violation[] {
  const violations: Violation[] = [];
  const known = new Set(files.map((f) => f.path));
  // wing -> wing -> first import that makes the edge (for the cycle message)
  const edges = new Map<string, Map<string, { file: string; line: number; specifier: string }>>();

  for (const file of files) {
    const wing = wingOf(file.path);
    const entry = rules.entryPoints.includes(file.path);
    for (const ref of parseImports(file.text)) {
      const { specifier, line } = ref;
      const at = { file: file.path, line, specifier };
      if (specifier.startsWith('.')) {
        const target = posix.normalize(posix.join(posix.dirname(file.path), specifier));
        if (target.startsWith('..')) {
          violations.push({ kind: 'outside', ...at, message: `${file.path}:${line} imports '${specifier}', outside runtime/` });
          continue;
        }
        if (!known.has(target)) {
          violations.push({ kind: 'unresolved', ...at, message: `${file.path}:${line} imports '${specifier}', which is not a file of runtime/` });
          continue;
        }
        const targetWing = wingOf(target);
        if (targetWing === wing || entry) continue;
        const rule = rules.may[wing];
        if (!allows(rule, target)) {
          violations.push({
            kind: 'wing', ...at,
            message: `${file.path}:${line} imports ${target}: ${wing === ROOT ? 'root files' : `${wing}/`} may import ${describe(rule)}`,
          });
        }
        let out = edges.get(wing);
        if (!out) edges.set(wing, (out = new Map()));
        if (!out.has(targetWing)) out.set(targetWing, at);
      } else if (specifier.startsWith('@nats-io/')) {
        if (!rules.natsFiles.includes(file.path)) {
          violations.push({ kind: 'nats', ...at, message: `${file.path}:${line} imports ${specifier}: only the files that talk to NATS may (${rules.natsFiles.join(', ')})` });
        }
      } else if (specifier.startsWith('@opentelemetry/') || specifier === 'pino' || specifier.startsWith('pino/')) {
        if (!rules.telemetryWings.includes(wing)) {
          violations.push({ kind: 'telemetry', ...at, message: `${file.path}:${line} imports ${specifier}: only ${rules.telemetryWings.map((w) => `${w}/`).join(', ')} may import OpenTelemetry and pino` });
        }
      }
    }
  }

  for (const cycle of wingCycles(edges)) {
    const steps = cycle.map((from, k) => {
      const to = cycle[(k + 1) % cycle.length]!;
      const via = edges.get(from)!.get(to)!;
      return `${from} -> ${to} (${via.file}:${via.line} imports '${via.specifier}')`;
    });
    const first = edges.get(cycle[0]!)!.get(cycle[1 % cycle.length]!)!;
    violations.push({ kind: 'cycle', ...first, message: `wing cycle: ${steps.join('; ')}` });
  }
  return violations;
}

/** One cycle per strongly connected group of wings (Tarjan), each as the wings in order. */
function wingCycles(edges: Map<string, Map<string, unknown>>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const groups: string[][] = [];
  let counter = 0;
  const visit = (v: string): void => {
    index.set(v, counter);
    low.set(v, counter);
    counter++;
    stack.push(v);
    onStack.add(v);
    for (const w of edges.get(v)?.keys() ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) === index.get(v)) {
      const group: string[] = [];
      let w: string;
      do { w = stack.pop()!; onStack.delete(w); group.push(w); } while (w !== v);
      if (group.length > 1) groups.push(group);
    }
  };
  for (const v of [...edges.keys()].sort()) if (!index.has(v)) visit(v);
  // Turn each group into a concrete cycle: a shortest path back to its first wing.
  return groups.map((group) => {
    const members = new Set(group);
    const start = [...group].sort()[0]!;
    const prev = new Map<string, string>();
    const queue = [start];
    while (queue.length > 0) {
      const v = queue.shift()!;
      for (const w of edges.get(v)?.keys() ?? []) {
        if (!members.has(w)) continue;
        if (w === start) {
          const path = [v];
          for (let p = v; p !== start; ) { p = prev.get(p)!; path.unshift(p); }
          return path;
        }
        if (!prev.has(w)) { prev.set(w, v); queue.push(w); }
      }
    }
    return [start];
  });
}

/** Every source file under a runtime/ folder, with paths relative to it. */
export function readRuntimeTree(root: string): SourceFile[] {
  const files: SourceFile[] = [];
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const full = join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (/\.(ts|mts|cts|js|mjs|cjs)$/.test(entry.name)) {
        files.push({ path: relative(root, full).split('\\').join('/'), text: readFileSync(full, 'utf8') });
      }
    }
  };
  walk(root);
  return files.sort((a, b) => a.path.localeCompare(b.path));
}
