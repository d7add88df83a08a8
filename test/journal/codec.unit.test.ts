import { describe, expect, it } from 'vitest';
import { decode, decodeCommitBatch, decodeCommits, encodeBatch, encodeBatchGeneric, CorruptBatchError, type WireCommit } from '../../runtime/journal/codec.ts';
import { formatId, IdGenerator } from '../../runtime/envelope.ts';
import { encode } from '../../runtime/journal/codec.ts';
import { AppendHeaders, COMMIT_BATCH_FORMAT, FORMAT_HEADER, headers } from '../../runtime/journal/journal.ts';

const prefix = 'e16c6a13-b011-45ea-893f-';

function commit(i: number, payload: unknown = { amount: i }): WireCommit {
  return [`cmd-${i}`, 'Account', `acct-${i}`, i % 2 === 0 ? null : `corr-${i}`, i % 3 === 0 ? 'u-1' : null, 1_700_000_000_000 + i, 'troupe', 10 + i, [[i, 'Deposited', 1, payload], ['explicit-id', 'Withdrawn', 2, { amount: 1 }]], i === 1 ? 'event-9' : null];
}

describe('commit batches', () => {
  it('decode to full envelopes with every field a consumer needs', () => {
    const bytes = encodeBatch(prefix, [commit(1), commit(2)]);
    const events = decodeCommitBatch(bytes, 77);
    expect(events).toHaveLength(4);
    expect(events[0]).toEqual({
      eventId: formatId(prefix, 1), eventType: 'Deposited', aggregateType: 'Account', aggregateId: 'acct-1', sequence: 11, version: 1,
      timestamp: new Date(1_700_000_000_001).toISOString(), correlationId: 'corr-1', causationId: 'cmd-1', commandCausationId: 'event-9', commandId: 'cmd-1', userId: null,
      source: 'troupe', position: 77, payload: { amount: 1 },
    });
    expect(events[1]).toMatchObject({ eventId: 'explicit-id', eventType: 'Withdrawn', sequence: 12, version: 2 });
    // A null correlationId on the wire means "the command itself".
    expect(events[2]).toMatchObject({ correlationId: 'cmd-2', aggregateId: 'acct-2', sequence: 12 });
  });

  it('are written by the fast writer exactly as msgpackr would decode them', () => {
    const odd = { s: 'ünïcödé ✓'.repeat(20), n: -5, big: 2 ** 40, f: 0.25, neg: -70_000, arr: [1, 'x', null, true, false, []], nested: { a: { b: [{}] } }, when: new Date(0), long: 'y'.repeat(300) };
    const batch = [commit(1, odd), commit(2, []), commit(3, 'text'), commit(4, null)];
    expect(decode(encodeBatch(prefix, batch))).toEqual(decode(encodeBatchGeneric(prefix, batch)));
  });

  it('hold many commits in one message', () => {
    const batch = Array.from({ length: 5000 }, (_, i) => commit(i));
    const commits = decodeCommits(encodeBatch(prefix, batch));
    expect(commits).toHaveLength(5000);
    expect(commits[4999]![0]).toBe('cmd-4999');
  });

  it('refuse bytes that are not a Troupe commit batch', () => {
    expect(() => decodeCommits(encode({ hello: 'world' }))).toThrow(CorruptBatchError);
    expect(() => decodeCommits(encode([2, prefix]))).toThrow(/format 2/);
  });
});

describe('IdGenerator', () => {
  it('makes distinct UUID-shaped ids', () => {
    const a = new IdGenerator();
    const b = new IdGenerator();
    const ids = new Set([a.next(), a.next(), b.next(), b.next()]);
    expect(ids.size).toBe(4);
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });
});

describe('append headers', () => {
  it('encode exactly as the NATS client encodes the same headers', () => {
    const mine = new AppendHeaders();
    const theirs = headers();
    for (const [k, v] of [['Nats-Expected-Last-Subject-Sequence', '41'], ['Nats-Msg-Id', 'node.1.abc.3.41'], [FORMAT_HEADER, COMMIT_BATCH_FORMAT]] as const) {
      mine.set(k, v);
      theirs.set(k, v);
    }
    mine.set('Nats-Expected-Last-Subject-Sequence', '42');
    theirs.set('Nats-Expected-Last-Subject-Sequence', '42');
    expect(Buffer.from(mine.encode()).toString('latin1')).toBe(Buffer.from((theirs as unknown as { encode(): Uint8Array }).encode()).toString('latin1'));
    expect(mine.get('Nats-Msg-Id')).toBe('node.1.abc.3.41');
    expect(mine.get('Missing')).toBe('');
  });

  it('refuse a value with CR or LF, which would end the header block', () => {
    const h = new AppendHeaders();
    expect(() => h.set('Nats-Msg-Id', 'a\r\nNats-Expected-Last-Subject-Sequence: 0')).toThrow(/CR or LF/);
    expect(() => h.set('Nats-Msg-Id', 'a\nb')).toThrow(/CR or LF/);
  });
});
