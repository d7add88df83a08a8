import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import * as errors from '../runtime/errors.ts';
import {
  ConcurrencyError, DecideFailedError, DomainRejection, ERROR_CLASSES, InternalError, InvalidDefinitionError, InvalidOptionError,
  JournalUnavailableError, KeysUnavailableError, NatsServerUnsupportedError, NotFoundError, OverloadedError, StoppedError, TimeoutError,
  TroupeError, UnauthenticatedError, ForbiddenError, RateLimitedError, NatsAuthError, UpcastError, ValidationError, WorkerLostError, errorClassOf, fromWire, isTroupeError, reject, toWire,
  type ErrorCode, type ErrorData,
} from '../runtime/errors.ts';

const RUNTIME = fileURLToPath(new URL('../runtime/', import.meta.url));
const ERRORS_FILE = join(RUNTIME, 'errors.ts');

/** The members of the ErrorCode union, read from the source (the type does not exist at run time). */
function codesInUnion(): string[] {
  const src = readFileSync(ERRORS_FILE, 'utf8');
  const union = /export type ErrorCode =([^;]*);/.exec(src)?.[1];
  if (union === undefined) throw new Error('errors.ts declares no ErrorCode union');
  return [...union.matchAll(/'([A-Z_]+)'/g)].map((m) => m[1]!);
}

/** How a caller builds each code, through the class's own constructor. */
const MAKE: { readonly [C in ErrorCode]: (message: string, data: ErrorData) => TroupeError } = {
  VALIDATION: (m, d) => new ValidationError('VALIDATION', m, d),
  UNKNOWN_ACTOR_TYPE: (m, d) => new ValidationError('UNKNOWN_ACTOR_TYPE', m, d),
  UNKNOWN_COMMAND_TYPE: (m, d) => new ValidationError('UNKNOWN_COMMAND_TYPE', m, d),
  MALFORMED_COMMAND: (m, d) => new ValidationError('MALFORMED_COMMAND', m, d),
  MALFORMED_REQUEST: (m, d) => new ValidationError('MALFORMED_REQUEST', m, d),
  COMMAND_TOO_LARGE: (m, d) => new ValidationError('COMMAND_TOO_LARGE', m, d),
  SCHEMA_VIOLATION: (m, d) => new ValidationError('SCHEMA_VIOLATION', m, d),
  SENSITIVE_DATA: (m, d) => new ValidationError('SENSITIVE_DATA', m, d),
  UPCAST_FAILED: (m, d) => new UpcastError(m, d),
  KEYS_UNAVAILABLE: (m, d) => new KeysUnavailableError(m, d),
  DOMAIN_REJECTION: (m, d) => new DomainRejection(m, d),
  DECIDE_FAILED: (m, d) => new DecideFailedError(m, d),
  CONCURRENCY: (m, d) => new ConcurrencyError('CONCURRENCY', m, d),
  SHARD_NOT_OWNED: (m, d) => new ConcurrencyError('SHARD_NOT_OWNED', m, d),
  JOURNAL_UNAVAILABLE: (m, d) => new JournalUnavailableError(m, d),
  OVERLOADED: (m, d) => new OverloadedError(m, d),
  NOT_FOUND: (m, d) => new NotFoundError(m, d),
  TIMEOUT: (m, d) => new TimeoutError(m, d),
  INVALID_OPTION: (m, d) => new InvalidOptionError(m, d),
  INVALID_DEFINITION: (m, d) => new InvalidDefinitionError(m, d),
  STOPPED: (m, d) => new StoppedError(m, d),
  WORKER_LOST: (m, d) => new WorkerLostError(m, d),
  NATS_SERVER_UNSUPPORTED: (m, d) => new NatsServerUnsupportedError(m, d),
  UNAUTHENTICATED: (m, d) => new UnauthenticatedError(m, d),
  FORBIDDEN: (m, d) => new ForbiddenError(m, d),
  RATE_LIMITED: (m, d) => new RateLimitedError(m, d as ErrorData & { retryAfterMs: number }),
  NATS_AUTH: (m, d) => new NatsAuthError(m, d),
  INTERNAL: (m, d) => new InternalError(m, d),
};

/** Whether a retry can help, as the README's error table says. */
const RETRYABLE: { readonly [C in ErrorCode]: boolean } = {
  VALIDATION: false, UNKNOWN_ACTOR_TYPE: false, UNKNOWN_COMMAND_TYPE: false, MALFORMED_COMMAND: false, MALFORMED_REQUEST: false,
  COMMAND_TOO_LARGE: false, SCHEMA_VIOLATION: false, SENSITIVE_DATA: false, UPCAST_FAILED: false, KEYS_UNAVAILABLE: true,
  DOMAIN_REJECTION: false, DECIDE_FAILED: false, CONCURRENCY: true, SHARD_NOT_OWNED: true, JOURNAL_UNAVAILABLE: true,
  OVERLOADED: true, NOT_FOUND: false, TIMEOUT: true, INVALID_OPTION: false, INVALID_DEFINITION: false, STOPPED: true,
  WORKER_LOST: true, NATS_SERVER_UNSUPPORTED: false, UNAUTHENTICATED: false, FORBIDDEN: false, RATE_LIMITED: true, NATS_AUTH: false, INTERNAL: false,
};

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...filesUnder(p));
    else if (/\.(ts|mts|cts|js|mjs|cjs)$/.test(entry.name)) out.push(p);
  }
  return out;
}

describe('error codes', () => {
  const codes = codesInUnion();

  it('every code of the ErrorCode union has exactly one class, and the table holds no other code', () => {
    expect(codes.length).toBeGreaterThan(20);
    expect(new Set(codes).size).toBe(codes.length);
    expect(Object.keys(ERROR_CLASSES).sort()).toEqual([...codes].sort());
    expect(Object.isFrozen(ERROR_CLASSES)).toBe(true);
    for (const code of codes) expect(errorClassOf(code), code).toBe(ERROR_CLASSES[code as ErrorCode]);
    expect(errorClassOf('NO_SUCH_CODE')).toBeUndefined();
    expect(errorClassOf('toString')).toBeUndefined();
  });

  it('every error class of errors.ts owns at least one code', () => {
    const classes = Object.values(errors).filter((v): v is typeof TroupeError => typeof v === 'function' && v.prototype instanceof TroupeError);
    expect(classes.length).toBeGreaterThan(10);
    const owning = new Set(Object.values(ERROR_CLASSES));
    expect(classes.filter((c) => !owning.has(c)).map((c) => c.name)).toEqual([]);
  });

  for (const code of Object.keys(MAKE) as ErrorCode[]) {
    it(`${code} is raised as its class, with that code, the class's name and its documented retryability, and survives the wire`, () => {
      const cls = ERROR_CLASSES[code];
      const data = { aggregateType: 'Account', aggregateId: 'a-1', commandId: 'c-1', shard: 3 };
      const e = MAKE[code]('something happened', data);
      expect(e.constructor).toBe(cls);
      expect(e.code).toBe(code);
      expect(e.name).toBe(cls.name);
      expect(e.retryable).toBe(RETRYABLE[code]);
      expect(isTroupeError(e, code)).toBe(true);

      const back = fromWire(structuredClone(toWire(e)));
      expect(back.constructor).toBe(cls);
      expect(back.name).toBe(cls.name);
      expect(back.code).toBe(code);
      expect(back.message).toBe('something happened');
      expect(back.data).toEqual(data);
      expect(back.retryable).toBe(RETRYABLE[code]);
    });
  }

  it('a retryability that differs from the default survives the wire', () => {
    const keysGone = fromWire(structuredClone(toWire(new KeysUnavailableError('wrapped with another master key', {}, undefined, false))));
    expect(keysGone).toBeInstanceOf(KeysUnavailableError);
    expect(keysGone.retryable).toBe(false);
    const internal = fromWire(structuredClone(toWire(new InternalError('the node sent fewer results', {}, undefined, true))));
    expect(internal).toBeInstanceOf(InternalError);
    expect(internal.retryable).toBe(true);
  });

  it('a non-Troupe error crosses the wire as an InternalError', () => {
    const back = fromWire(structuredClone(toWire(new TypeError('x is not a function'))));
    expect(back).toBeInstanceOf(InternalError);
    expect(back.code).toBe('INTERNAL');
    expect(back.message).toBe('x is not a function');
    expect(back.retryable).toBe(false);
  });

  it('a code from a newer peer keeps its code and retryability', () => {
    const back = fromWire({ code: 'SOMETHING_NEW' as ErrorCode, message: 'm', data: { shard: 1 }, retryable: true });
    expect(back).toBeInstanceOf(TroupeError);
    expect(isTroupeError(back, 'SOMETHING_NEW' as ErrorCode)).toBe(true);
    expect(back.retryable).toBe(true);
    expect(back.data).toEqual({ shard: 1 });
  });

  it('no file of runtime/ but errors.ts raises a bare TroupeError or defines an error class', () => {
    const offenders: string[] = [];
    for (const file of filesUnder(RUNTIME)) {
      if (file === ERRORS_FILE) continue;
      const src = readFileSync(file, 'utf8');
      src.split('\n').forEach((line, i) => {
        if (/new\s+TroupeError\s*\(/.test(line) || /extends\s+TroupeError\b/.test(line)) offenders.push(`${relative(RUNTIME, file)}:${i + 1}: ${line.trim()}`);
      });
    }
    expect(filesUnder(RUNTIME).length).toBeGreaterThan(20);
    expect(offenders).toEqual([]);
  });
});

describe('errors', () => {
  it('keep their class, code and ids across a thread or process boundary', () => {
    const original = new ConcurrencyError('SHARD_NOT_OWNED', 'owned elsewhere', { shard: 3, aggregateId: 'a' });
    const wire = structuredClone(toWire(original));
    const back = fromWire(wire);
    expect(back).toBeInstanceOf(ConcurrencyError);
    expect(back.code).toBe('SHARD_NOT_OWNED');
    expect(back.retryable).toBe(true);
    expect(back.data).toEqual({ shard: 3, aggregateId: 'a' });
    expect(fromWire(toWire(new WorkerLostError('gone')))).toBeInstanceOf(WorkerLostError);
  });

  it('say whether a retry can help', () => {
    expect(new JournalUnavailableError('down').retryable).toBe(true);
    expect(new ValidationError('SCHEMA_VIOLATION', 'bad').retryable).toBe(false);
    expect(new DomainRejection('no').retryable).toBe(false);
  });

  it('reject() throws a domain rejection carrying its reason and details', () => {
    try {
      reject('insufficient-funds', { balance: 3 });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(DomainRejection);
      expect(isTroupeError(e, 'DOMAIN_REJECTION')).toBe(true);
      expect((e as DomainRejection).data).toEqual({ reason: 'insufficient-funds', balance: 3 });
    }
  });

  it('isTroupeError tells Troupe errors from others, structurally', () => {
    expect(isTroupeError(new Error('x'))).toBe(false);
    expect(isTroupeError({ code: 'X', message: 'm' })).toBe(false);
    expect(isTroupeError(toWire(new DomainRejection('no')), 'DOMAIN_REJECTION')).toBe(true);
    expect(isTroupeError(new DomainRejection('no'), 'CONCURRENCY')).toBe(false);
  });
});
