/**
 * The command line of the benchmark suite (bench/run.ts): steps, their aliases, and options.
 */

export const STEP_KEYS = ['ceiling', 'plain', 'in-process', 'remote', 'workers', 'scale', 'activation', 'sync', 'r3', 'cluster', 'micro', 'timers'] as const;
export type StepKey = (typeof STEP_KEYS)[number];
export const ALIASES: Record<string, readonly StepKey[]> = {
  baselines: ['ceiling', 'plain'],
  'many-nodes': ['cluster'],
  durability: ['sync', 'r3'],
  'sync-always': ['sync'],
  troupe: ['in-process', 'remote'],
};

export interface Args {
  quick: boolean;
  /** --help: print usage() and exit. */
  help: boolean;
  json?: string;
  only: Set<StepKey> | null;
  isolate: boolean;
  profileDir?: string;
  md?: string;
  svg?: string;
  accounts?: number;
  commands?: number;
  scale?: number[];
  repeat?: number;
  fromJson?: string;
  /** The cluster step's timelines: how long each runs (seconds). */
  timelineSeconds?: number;
  /** Where the cluster step draws its timeline chart. */
  timelineSvg?: string;
}

export function usage(): string {
  return [
    'usage: npm run bench -- [--quick] [--json FILE] [--only STEPS] [--profile DIR]',
    '                        [--accounts N] [--commands N] [--scale 10k,100k,1m] [--repeat N]',
    '                        [--same-process] [--from-json FILE] [--md FILE] [--svg FILE]',
    '                        [--timeline-seconds N] [--timeline-svg FILE]',
    `steps: ${STEP_KEYS.join(', ')} (or ${Object.keys(ALIASES).join(', ')})`,
    '--quick: small sizes, a smoke test of the suite; its numbers are not a performance claim.',
    '',
  ].join('\n');
}

export function parseArgs(argv: readonly string[]): Args {
  const args: Args = { quick: false, help: false, only: null, isolate: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value\n${usage()}`);
      return v;
    };
    const num = (): number => {
      const v = Number(value().replace(/_/g, ''));
      if (!Number.isInteger(v) || v <= 0) throw new Error(`${a} needs a positive integer`);
      return v;
    };
    switch (a) {
      case '--quick': args.quick = true; break;
      case '--json': args.json = value(); break;
      case '--profile': args.profileDir = value(); break;
      case '--md': args.md = value(); break;
      case '--svg': args.svg = value(); break;
      case '--accounts': args.accounts = num(); break;
      case '--commands': args.commands = num(); break;
      case '--repeat': args.repeat = num(); break;
      case '--from-json': args.fromJson = value(); break;
      case '--scale':
        args.scale = value().split(',').map((x) => {
          const m = /^(\d+(?:\.\d+)?)([km]?)$/i.exec(x.trim().replace(/_/g, ''));
          if (m === null) throw new Error(`--scale takes account counts like 10k,100k,1m; got ${x}`);
          return Math.round(Number(m[1]) * (m[2]?.toLowerCase() === 'm' ? 1e6 : m[2]?.toLowerCase() === 'k' ? 1e3 : 1));
        });
        break;
      case '--same-process': args.isolate = false; break;
      case '--only': {
        const set = new Set<StepKey>();
        for (const k of value().split(',').map((s) => s.trim()).filter(Boolean)) {
          const keys = ALIASES[k] ?? ((STEP_KEYS as readonly string[]).includes(k) ? [k as StepKey] : null);
          if (keys === null) throw new Error(`--only: unknown step ${JSON.stringify(k)}; steps: ${STEP_KEYS.join(', ')} (or ${Object.keys(ALIASES).join(', ')})`);
          for (const key of keys) set.add(key);
        }
        args.only = set;
        break;
      }
      case '--timeline-seconds': args.timelineSeconds = num(); break;
      case '--timeline-svg': args.timelineSvg = value(); break;
      case '--help': case '-h': args.help = true; break;
      default:
        throw new Error(`unknown argument ${a}\n${usage()}`);
    }
  }
  return args;
}
