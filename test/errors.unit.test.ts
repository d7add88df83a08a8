import { describe, expect, it } from 'vitest';
import { ConcurrencyError, DomainRejection, fromWire, isTroupeError, JournalUnavailableError, reject, toWire, ValidationError, WorkerLostError } from '../runtime/errors.ts';

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
