// wire.ts: each layout that crosses a thread or NATS keeps the positions earlier versions
// used, so a node and a client of the previous version still understand each other.
import { describe, expect, it } from 'vitest';
import { decodeCommits, encodeBatch, encode, decode } from '../runtime/journal/codec.ts';
import { IdUse, type CommandEnvelope } from '../runtime/envelope.ts';
import {
  COMMAND_STRIDE, COMMIT, EVENT, FLAT, FLAT_2, OUTCOME_STRIDE, REQUEST_STRIDE, REQUEST_STRIDE_2, commitTuple, lastSeqOf, parseReadRequest,
  pushCommand, pushOutcome, pushRequest, pushStoredOutcome, readCommand, readOutcome, readRequest, requestMessage, type CommandFields,
} from '../runtime/wire.ts';

describe('wire.ts layouts', () => {
  it('names the commit and event offsets of the log', () => {
    const commit = commitTuple('cmd-1', 'Account', 'a1', 'corr-1', 'alice', 1_700_000_000_000, 'node-1', 4, [[7, 'Deposited', 2, { amount: 5 }]], 'evt-9');
    expect(commit).toEqual(['cmd-1', 'Account', 'a1', 'corr-1', 'alice', 1_700_000_000_000, 'node-1', 4, [[7, 'Deposited', 2, { amount: 5 }]], 'evt-9']);
    const [back] = decodeCommits(encodeBatch('p-', [commit]));
    expect([back![COMMIT.commandId], back![COMMIT.type], back![COMMIT.id], back![COMMIT.correlationId], back![COMMIT.userId]]).toEqual(['cmd-1', 'Account', 'a1', 'corr-1', 'alice']);
    expect([back![COMMIT.timestamp], back![COMMIT.source], back![COMMIT.firstSeq], back![COMMIT.causationId], lastSeqOf(back!)]).toEqual([1_700_000_000_000, 'node-1', 4, 'evt-9', 4]);
    const e = back![COMMIT.events][0]!;
    expect([e[EVENT.id], e[EVENT.type], e[EVENT.version], e[EVENT.payload]]).toEqual(['p-000000000007', 'Deposited', 2, { amount: 5 }]);
    // A correlationId equal to the commandId is stored as nil.
    expect(commitTuple('c', 'A', 'a', 'c', null, 0, 's', 1, [], null)[COMMIT.correlationId]).toBeNull();
  });

  it('carries a command to a worker in COMMAND_STRIDE values, in the order of earlier versions', () => {
    const c: CommandEnvelope = {
      commandId: 'cmd-1', type: 'Deposit', aggregateType: 'Account', aggregateId: 'a1', payload: { amount: 5 }, userId: 'alice',
      correlationId: 'corr', causationId: null, shard: 3, idUse: IdUse.FRESH,
    };
    const flat: unknown[] = ['leading'];
    pushCommand(flat, c, 42);
    expect(flat.slice(1)).toEqual(['cmd-1', 'Deposit', 'Account', 'a1', { amount: 5 }, 'alice', 'corr', null, 3, IdUse.FRESH, 42, null]);
    expect(flat.length - 1).toBe(COMMAND_STRIDE);
    const into = {} as CommandFields;
    readCommand(flat, 1, into);
    expect(into).toEqual({ ...c, seq: 42, principal: null });
  });

  it('carries the verified principal of a command to its worker', () => {
    const principal = { id: 'alice', roles: ['teller'], tenant: 't1' };
    const c: CommandEnvelope = {
      commandId: 'cmd-1', type: 'Deposit', aggregateType: 'Account', aggregateId: 'a1', payload: {}, userId: 'alice',
      correlationId: 'corr', causationId: null, shard: 3, idUse: IdUse.FRESH, principal,
    };
    const flat: unknown[] = [];
    pushCommand(flat, c, 1);
    const into = {} as CommandFields;
    readCommand(flat, 0, into);
    expect(into.principal).toEqual(principal);
  });

  it('reads back an outcome with its events, from ids or from counters', () => {
    const out: unknown[] = [];
    pushOutcome(out, 5, null, { commandId: 'c', aggregateType: 'A', aggregateId: 'a', version: 3, position: 9, duplicate: true, events: [{ eventId: 'e-1', eventType: 'X', sequence: 2 }, { eventId: 'e-2', eventType: 'Y', sequence: 3 }] });
    pushStoredOutcome(out, 6, 1, 10, 'p-', [[255, 'Z', 1, {}]]);
    pushOutcome(out, 7, { code: 'STOPPED' }, null);
    expect(out.length).toBe(3 * OUTCOME_STRIDE);
    expect(out.slice(0, OUTCOME_STRIDE)).toEqual([5, null, 3, 9, ['e-1', 'X', 'e-2', 'Y'], true]);
    expect(readOutcome(out, 0, 'c', 'A', 'a').events).toEqual([{ eventId: 'e-1', eventType: 'X', sequence: 2 }, { eventId: 'e-2', eventType: 'Y', sequence: 3 }]);
    expect(readOutcome(out, OUTCOME_STRIDE, 'd', 'A', 'a')).toEqual({ commandId: 'd', aggregateType: 'A', aggregateId: 'a', version: 1, position: 10, duplicate: false, events: [{ eventId: 'p-0000000000ff', eventType: 'Z', sequence: 1 }] });
    expect(out.slice(2 * OUTCOME_STRIDE)).toEqual([7, { code: 'STOPPED' }, 0, 0, null, false]);
  });

  it('sends FLAT requests in the order of earlier clients, and reads FLAT_2 requests of older ones', () => {
    const flat: unknown[] = [];
    pushRequest(flat, 'cmd-1', 'Deposit', 'Account', 'a1', { amount: 1 }, null, 'corr', null, null, true);
    expect(flat).toEqual(['cmd-1', 'Deposit', 'Account', 'a1', { amount: 1 }, null, 'corr', null, null, true]);
    expect(flat.length).toBe(REQUEST_STRIDE);
    expect(decode(encode(requestMessage(FLAT, flat)))).toEqual([3, flat]);
    expect(readRequest(flat, REQUEST_STRIDE)).toEqual([{ commandId: 'cmd-1', type: 'Deposit', aggregateType: 'Account', aggregateId: 'a1', payload: { amount: 1 }, correlationId: 'corr', fresh: true }]);
    const old = flat.slice(0, REQUEST_STRIDE_2);
    expect(FLAT_2).toBe(2);
    expect(readRequest(old, REQUEST_STRIDE_2)).toEqual([{ commandId: 'cmd-1', type: 'Deposit', aggregateType: 'Account', aggregateId: 'a1', payload: { amount: 1 }, correlationId: 'corr' }]);
    expect(readRequest(flat.slice(0, 7), REQUEST_STRIDE)).toBeNull();
  });

  it('reads a read request only when it is [aggregateType, aggregateId]', () => {
    expect(parseReadRequest(['Account', 'a1'])).toEqual(['Account', 'a1']);
    for (const bad of [['Account'], ['Account', 1], { 0: 'Account', 1: 'a1' }, 'Account', null]) expect(parseReadRequest(bad)).toBeNull();
  });
});
