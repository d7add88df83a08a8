import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import * as troupe from '../runtime/index.ts';
import * as internal from '../runtime/internal.ts';
import * as ops from '../runtime/ops/index.ts';
import * as testing from '../runtime/testing/index.ts';

// The public surface is a decision, not an accident: adding or removing a value of an entry
// point means changing this list (and the docs) on purpose.
const PUBLIC = {
  troupe: [
    // actors
    'defineActor', 'reject', 'REDACTED', 'upcast', 'addField', 'renameField', 'removeField', 'compose', 'GUARD_PATTERNS', 'DEFAULT_GUARD_PATTERNS',
    // node and client
    'Troupe', 'TroupeClient',
    // errors
    'TroupeError', 'ValidationError', 'DomainRejection', 'DecideFailedError', 'ConcurrencyError', 'JournalUnavailableError', 'OverloadedError',
    'NotFoundError', 'TimeoutError', 'InvalidOptionError', 'InvalidDefinitionError', 'UpcastError', 'KeysUnavailableError', 'StoppedError',
    'WorkerLostError', 'NatsServerUnsupportedError', 'UnauthenticatedError', 'ForbiddenError', 'RateLimitedError', 'NatsAuthError', 'InternalError', 'isTroupeError',
    // reading events, keys
    'eventReader', 'openKeyRing',
    // consumers
    'consume', 'checkVersion', 'circuitBreaker', 'DeadLetterQueue', 'project', 'projectionReader', 'QueryBus', 'workflow', 'saga', 'commandIdFor',
    // process managers
    'defineProcess', 'processManager',
  ],
  testing: ['given', 'testActor', 'DEFAULT_TEST_NOW', 'msgpackrTestCodec', 'validateEventSchema', 'validateCommandSchema', 'upcastEvent', 'upcastState', 'startNatsServer'],
  ops: ['startTracingSdk', 'shutdownTracingSdk', 'withConsumerSpan', 'registerHealthCheck', 'registerConsumerProbe', 'recordDeadLettered', 'serveConsumerOps', 'rotateMasterKey', 'retireMasterKey'],
};

const ROOT = fileURLToPath(new URL('..', import.meta.url));

describe('entry points', () => {
  it('troupe exports exactly the listed values, a front door of 30 to 48', () => {
    expect(Object.keys(troupe).sort()).toEqual([...PUBLIC.troupe].sort());
    expect(PUBLIC.troupe.length).toBeGreaterThanOrEqual(30);
    // 46: process managers added two (defineProcess, processManager); 47: NatsAuthError, since every
    // error code has its one class in the front door; 48: projectionReader, the read side of a
    // scaled-out projection for processes that run none of its instances (nothing else reads a
    // partitioned view). The next addition should retire one.
    expect(PUBLIC.troupe.length).toBeLessThanOrEqual(48);
  });

  it('troupe/testing and troupe/ops export exactly the listed values', () => {
    expect(Object.keys(testing).sort()).toEqual([...PUBLIC.testing].sort());
    expect(Object.keys(ops).sort()).toEqual([...PUBLIC.ops].sort());
  });

  it('no value is exported by two public entry points, or by a public one and troupe/internal', () => {
    const seen = new Map<string, string>();
    const twice: string[] = [];
    for (const [entry, mod] of Object.entries({ troupe, testing, ops, internal })) {
      for (const name of Object.keys(mod)) {
        const before = seen.get(name);
        if (before !== undefined) twice.push(`${name}: ${before} and ${entry}`);
        seen.set(name, entry);
      }
    }
    expect(twice).toEqual([]);
  });

  it('every error class of the error table is public', () => {
    const pub = new Set<unknown>(Object.values(troupe));
    const missing = Object.entries(internal.ERROR_CLASSES).filter(([, cls]) => !pub.has(cls)).map(([code, cls]) => `${code}: ${cls.name}`);
    expect(missing).toEqual([]);
  });

  it('the public entry points hold no engine defaults', () => {
    const defaults = [...Object.keys(troupe), ...Object.keys(ops)].filter((n) => n.startsWith('DEFAULT_') && n !== 'DEFAULT_GUARD_PATTERNS');
    expect(defaults).toEqual([]);
  });

  it('the example actors import only the public surface of the runtime', () => {
    const dir = join(ROOT, 'actors');
    const wrong: string[] = [];
    const files = readdirSync(dir).filter((f) => f.endsWith('.ts'));
    expect(files.length).toBeGreaterThan(3);
    for (const file of files) {
      for (const m of readFileSync(join(dir, file), 'utf8').matchAll(/from\s+'([^']+)'/g)) {
        const spec = m[1]!;
        if (spec.includes('runtime/') && spec !== '../runtime/index.ts') wrong.push(`${file}: ${spec}`);
      }
    }
    expect(wrong).toEqual([]);
  });
});
