import { AssertionError } from 'node:assert';
import { pack, unpack } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import {
  DecideFailedError, DomainRejection, ValidationError, defineActor, isTroupeError, reject, type CommandContext, type EventContext,
} from '../../runtime/index.ts';
import { given, testActor, type TestCodec } from '../../runtime/testing/index.ts';

interface Counter { count: number; log: number[] }

const counter = defineActor<Counter>({
  type: 'Counter',
  initialState: () => ({ count: 0, log: [] }),
  commands: {
    Add: (s, c: { by: number }) => {
      if (c.by <= 0) reject('not-positive', { by: c.by });
      return { type: 'Added', payload: { by: c.by } };
    },
    AddTwice: (_s, c: { by: number }) => [{ type: 'Added', payload: { by: c.by } }, { type: 'Added', payload: { by: c.by } }],
    Nothing: () => undefined,
    Reset: (s) => (s.count === 0 ? [] : [{ type: 'CounterReset', payload: {} }]),
  },
  events: {
    Added: (s, e: { by: number }) => ({ count: s.count + e.by, log: [...s.log, e.by] }),
    CounterReset: () => ({ count: 0, log: [] }),
  },
  snapshotEvery: 3,
});

const added = (by: number) => ({ type: 'Added', payload: { by } });

/** Runs fn and returns what it threw; fails the test when it throws nothing. */
function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected the call to throw, and it returned');
}

describe('given/when/then', () => {
  it('folds the given events and passes when the expected events match', () => {
    given(counter, [added(2), added(3)]).when('Add', { by: 4 }).then([added(4)]).thenState({ count: 9, log: [2, 3, 4] });
  });

  it('then fails with the diff when the events differ', () => {
    const e = thrown(() => given(counter).when('Add', { by: 4 }).then([added(5)]));
    expect(e).toBeInstanceOf(AssertionError);
    expect(e.message).toContain('given no events of Counter, when Add {"by":4}: the events differ');
    expect(e.message).toMatch(/by: 4[\s\S]*by: 5/);
  });

  it('then fails when the command emitted events and none were expected, or the reverse', () => {
    expect(thrown(() => given(counter).when('Add', { by: 1 }).then([]))).toBeInstanceOf(AssertionError);
    expect(thrown(() => given(counter).when('Reset', {}).then([{ type: 'CounterReset', payload: {} }]))).toBeInstanceOf(AssertionError);
    expect(thrown(() => given(counter).when('AddTwice', { by: 1 }).then([added(1)]))).toBeInstanceOf(AssertionError);
  });

  it('then fails and names the rejection when the command was rejected', () => {
    const e = thrown(() => given(counter).when('Add', { by: 0 }).then([added(0)]));
    expect(e).toBeInstanceOf(AssertionError);
    expect(e.message).toContain('the command failed with DOMAIN_REJECTION "not-positive"');
    expect((e as { cause?: unknown }).cause).toBeInstanceOf(DomainRejection);
  });

  it('thenState fails when the state differs or the command failed', () => {
    expect(thrown(() => given(counter).when('Add', { by: 1 }).thenState({ count: 2, log: [1] }))).toBeInstanceOf(AssertionError);
    expect(thrown(() => given(counter).when('Add', { by: -1 }).thenState({ count: 0, log: [] }))).toBeInstanceOf(AssertionError);
  });

  it('thenRejects matches a reason, a code or reason and data, and returns the error', () => {
    const error = given(counter).when('Add', { by: -2 }).thenRejects('not-positive');
    expect(error).toBeInstanceOf(DomainRejection);
    given(counter).when('Add', { by: -2 }).thenRejects();
    given(counter).when('Add', { by: -2 }).thenRejects('DOMAIN_REJECTION');
    given(counter).when('Add', { by: -2 }).thenRejects({ reason: 'not-positive', data: { by: -2 } });
    given(counter).when('Subtract', { by: 1 }).thenRejects('UNKNOWN_COMMAND_TYPE');
  });

  it('thenRejects fails when the command succeeded', () => {
    const e = thrown(() => given(counter).when('Add', { by: 1 }).thenRejects('not-positive'));
    expect(e).toBeInstanceOf(AssertionError);
    expect(e.message).toContain('expected a rejection ("not-positive"), but decide returned events');
  });

  it('thenRejects fails on another reason, another code or other data', () => {
    const rejected = given(counter).when('Add', { by: -2 });
    expect(thrown(() => rejected.thenRejects('too-small')).message).toContain('expected reason "too-small", got "not-positive"');
    expect(thrown(() => rejected.thenRejects('UNKNOWN_COMMAND_TYPE')).message).toContain('expected error code UNKNOWN_COMMAND_TYPE, got DOMAIN_REJECTION');
    expect(thrown(() => rejected.thenRejects({ data: { by: -3 } })).message).toContain('expected data.by to be -3, got -2');
  });

  it('thenRejects with no argument fails on an error that is not a domain rejection', () => {
    const e = thrown(() => given(counter).when('Subtract', {}).thenRejects());
    expect(e.message).toContain('expected error code DOMAIN_REJECTION, got UNKNOWN_COMMAND_TYPE');
  });

  it('given refuses an event type the actor does not declare', () => {
    const e = thrown(() => given(counter, [{ type: 'Subtracted', payload: { by: 1 } }]));
    expect(isTroupeError(e, 'VALIDATION')).toBe(true);
    expect(e.message).toContain('event #1 "Subtracted" is not declared by actor Counter (declared: Added, CounterReset)');
  });

  it('given without when asserts the folded state', () => {
    given(counter, [added(1), added(2)]).thenState({ count: 3, log: [1, 2] });
    expect(thrown(() => given(counter, [added(1)]).thenState({ count: 2, log: [1] }))).toBeInstanceOf(AssertionError);
  });

  it('given does not freeze or change the caller\'s events', () => {
    const events = [added(1)];
    given(counter, events).when('Add', { by: 1 }).then([added(1)]);
    expect(Object.isFrozen(events[0])).toBe(false);
  });
});

describe('running commands like the runtime', () => {
  it('rejects an unknown command type with UNKNOWN_COMMAND_TYPE naming the declared ones', () => {
    const e = thrown(() => testActor(counter).send('Subtract', { by: 1 }));
    expect(e).toBeInstanceOf(ValidationError);
    expect(isTroupeError(e, 'UNKNOWN_COMMAND_TYPE')).toBe(true);
    expect(e.message).toBe('actor Counter has no command "Subtract"; it accepts Add, AddTwice, Nothing, Reset');
  });

  it('passes a domain rejection through unchanged', () => {
    const e = thrown(() => testActor(counter).send('Add', { by: 0 })) as DomainRejection;
    expect(e).toBeInstanceOf(DomainRejection);
    expect(e.message).toBe('not-positive');
    expect(e.data).toEqual({ reason: 'not-positive', by: 0 });
  });

  it('wraps an exception thrown by decide in DecideFailedError with the original as cause', () => {
    const boom = new Error('boom');
    const broken = defineActor({ type: 'Broken', initialState: () => ({}), commands: { Go: () => { throw boom; } }, events: { Happened: (s) => s } });
    const e = thrown(() => testActor(broken).send('Go', {}));
    expect(e).toBeInstanceOf(DecideFailedError);
    expect(e.message).toBe('Broken.Go threw: boom');
    expect(e.cause).toBe(boom);
  });

  it('refuses an event type that decide returns but the actor does not declare', () => {
    const sloppy = defineActor({ type: 'Sloppy', initialState: () => ({}), commands: { Go: () => ({ type: 'Gone', payload: {} }) }, events: { Happened: (s) => s } });
    const e = thrown(() => given(sloppy).when('Go', {}).then([]));
    expect((e as { cause?: unknown }).cause).toBeInstanceOf(ValidationError);
    expect(e.message).toContain('returned event type \\"Gone\\", which is not declared in events (declared: Happened)');
    given(sloppy).when('Go', {}).thenRejects('VALIDATION');
  });

  it('refuses a promise or a value that is not an event draft from decide', () => {
    const odd = defineActor({
      type: 'Odd',
      initialState: () => ({}),
      // eslint-disable-next-line @typescript-eslint/require-await
      commands: { Later: (async () => [{ type: 'Happened', payload: {} }]) as never, Text: (() => 'Happened') as never },
      events: { Happened: (s) => s },
    });
    const later = thrown(() => testActor(odd).send('Later', {}));
    expect(isTroupeError(later, 'VALIDATION')).toBe(true);
    expect(later.message).toContain('returned a promise; decide must be synchronous');
    const text = thrown(() => testActor(odd).send('Text', {}));
    expect(isTroupeError(text, 'VALIDATION')).toBe(true);
    expect(text.message).toContain('returned "Happened"; return { type, payload } drafts');
  });

  it('treats a decide that returns nothing or [] as no events', () => {
    const kit = testActor(counter);
    expect(kit.send('Nothing', {})).toEqual([]);
    expect(kit.send('Reset', {})).toEqual([]);
    expect(kit.version).toBe(0);
  });

  it('catches a decide that mutates its state, and says why', () => {
    const mutating = defineActor<{ n: number }>({
      type: 'Mutating',
      initialState: () => ({ n: 0 }),
      commands: { Bump: (s) => { s.n += 1; return { type: 'Bumped', payload: {} }; } },
      events: { Bumped: (s) => ({ n: s.n }) },
    });
    const e = thrown(() => testActor(mutating).send('Bump', {}));
    expect(e).toBeInstanceOf(DecideFailedError);
    expect(e.message).toContain('decide and evolve must return new objects');

    // With freezing off the mutation goes through, and restart() shows the log cannot rebuild it.
    const kit = testActor(mutating, { freeze: false });
    kit.send('Bump', {});
    expect(kit.state).toEqual({ n: 1 });
    expect(thrown(() => kit.restart()).message).toContain('Mutating restart: snapshot at version 0 + replay of 1 events differs from the live state');
  });

  it('catches an evolve that mutates the state', () => {
    const inPlace = defineActor<{ n: number }>({
      type: 'InPlace',
      initialState: () => ({ n: 0 }),
      commands: { Bump: () => ({ type: 'Bumped', payload: {} }) },
      events: { Bumped: (s) => { s.n += 1; return s; } },
    });
    const e = thrown(() => testActor(inPlace).send('Bump', {}));
    expect(e).toBeInstanceOf(DecideFailedError);
    expect(e.message).toContain('evolve for Bumped (sequence 1) threw while applying the events of Bump');
  });

  it('gives decide a context with the ids, version and fixed clock, and lets a test override them', () => {
    const seen: CommandContext[] = [];
    const events: EventContext[] = [];
    const spy = defineActor({
      type: 'Spy',
      initialState: () => ({}),
      commands: { Look: (_s, _c, ctx) => { seen.push(ctx); return { type: 'Looked', payload: {} }; } },
      events: { Looked: (s, _e, ctx) => { events.push(ctx); return s; } },
    });
    const kit = testActor(spy, { aggregateId: 'spy-1', userId: 'ana' });
    kit.send('Look', {});
    kit.send('Look', {}, { now: 5, userId: 'bo', commandType: 'Other', correlationId: 'corr' });
    expect(seen[0]).toEqual({
      aggregateType: 'Spy', aggregateId: 'spy-1', commandId: 'cmd-1', commandType: 'Look', userId: 'ana', correlationId: 'cmd-1', version: 0, now: Date.UTC(2025, 0, 1),
      schedule: expect.any(Function), cancel: expect.any(Function), timer: null,
    });
    expect(seen[1]).toMatchObject({ commandId: 'cmd-2', commandType: 'Look', userId: 'bo', correlationId: 'corr', version: 1, now: 5 });
    expect(events).toEqual([
      { sequence: 1, eventType: 'Looked', timestamp: '2025-01-01T00:00:00.000Z' },
      { sequence: 2, eventType: 'Looked', timestamp: '1970-01-01T00:00:00.005Z' },
    ]);
  });

  it('passes the command payload through the codec before decide sees it', () => {
    let received: unknown;
    const echo = defineActor({
      type: 'Echo',
      initialState: () => ({}),
      commands: { Say: (_s, c: unknown) => { received = c; return []; } },
      events: { Said: (s) => s },
    });
    const payload = { words: new Map([['a', 1]]) };
    testActor(echo).send('Say', payload);
    expect(received).not.toBe(payload);
    expect(received).toEqual({ words: { a: 1 } });
  });
});

describe('testActor', () => {
  it('keeps state and numbers events across commands', () => {
    const kit = testActor(counter);
    expect(kit.send('Add', { by: 2 })).toEqual([{ type: 'Added', payload: { by: 2 }, sequence: 1 }]);
    expect(kit.send('AddTwice', { by: 1 })).toEqual([
      { type: 'Added', payload: { by: 1 }, sequence: 2 },
      { type: 'Added', payload: { by: 1 }, sequence: 3 },
    ]);
    expect(kit.state).toEqual({ count: 4, log: [2, 1, 1] });
    expect(kit.events.map((e) => e.sequence)).toEqual([1, 2, 3]);
    expect(kit.version).toBe(3);
  });

  it('leaves state and events unchanged when a command is rejected', () => {
    const kit = testActor(counter);
    kit.send('Add', { by: 2 });
    expect(() => kit.send('Add', { by: 0 })).toThrow(DomainRejection);
    expect(kit.state).toEqual({ count: 2, log: [2] });
    expect(kit.events).toHaveLength(1);
  });

  it('takes a snapshot once snapshotEvery events have passed since the last one', () => {
    const kit = testActor(counter);
    kit.send('Add', { by: 1 });
    kit.send('Add', { by: 1 });
    expect(kit.snapshotVersion).toBeUndefined();
    kit.send('Add', { by: 1 });
    expect(kit.snapshotVersion).toBe(3);
    kit.send('Add', { by: 1 });
    kit.send('AddTwice', { by: 1 });
    expect(kit.snapshotVersion).toBe(6);
    kit.send('AddTwice', { by: 1 });
    kit.send('AddTwice', { by: 1 });
    expect(kit.snapshotVersion).toBe(10);
  });

  it('restart rebuilds the same state and continues the sequence', () => {
    const kit = testActor(counter);
    for (let i = 1; i <= 8; i++) kit.send('Add', { by: i });
    const restarted = kit.restart();
    expect(restarted.state).toEqual(kit.state);
    expect(restarted.state).not.toBe(kit.state);
    expect(restarted.events).toEqual(kit.events);
    expect(restarted.snapshotVersion).toBe(6);
    expect(restarted.send('Add', { by: 1 })).toEqual([{ type: 'Added', payload: { by: 1 }, sequence: 9 }]);
    for (let k = 0; k <= 8; k++) kit.restart({ snapshotAt: k });
  });

  it('restart refuses a snapshot point outside the history', () => {
    const kit = testActor(counter);
    kit.send('Add', { by: 1 });
    expect(() => kit.restart({ snapshotAt: 2 })).toThrow('restart: snapshotAt must be an integer from 0 to 1 (the number of events), got 2');
    expect(() => kit.restart({ snapshotAt: -1 })).toThrow(RangeError);
  });

  it('restart fails when the state does not survive the codec', () => {
    const withMap = defineActor<{ seen: Map<string, number> }>({
      type: 'WithMap',
      initialState: () => ({ seen: new Map() }),
      commands: { See: (_s, c: { key: string }) => ({ type: 'Seen', payload: { key: c.key } }) },
      events: { Seen: (s, e: { key: string }) => ({ seen: new Map([...s.seen, [e.key, 1]]) }) },
    });
    const kit = testActor(withMap);
    kit.send('See', { key: 'a' });
    expect(thrown(() => kit.restart()).message).toContain('WithMap restart: the state does not survive the codec');
  });

  it('restart fails when replaying the log gives another state than the live actor', () => {
    let clock = 0;
    const impure = defineActor<{ at: number }>({
      type: 'Impure',
      initialState: () => ({ at: 0 }),
      commands: { Tick: () => ({ type: 'Ticked', payload: {} }) },
      // Reads a clock instead of the event: replay yields other values.
      events: { Ticked: () => ({ at: ++clock }) },
    });
    const kit = testActor(impure);
    kit.send('Tick', {});
    const e = thrown(() => kit.restart());
    expect(e).toBeInstanceOf(AssertionError);
    expect(e.message).toContain('Impure restart:');
  });

  it('restart fails when an event payload does not survive the codec', () => {
    const dated = defineActor<{ n: number }>({
      type: 'Dated',
      initialState: () => ({ n: 0 }),
      commands: { Mark: () => ({ type: 'Marked', payload: { at: new Map([['x', 1]]) } }) },
      events: { Marked: (s) => ({ n: s.n + 1 }) },
    });
    const kit = testActor(dated);
    kit.send('Mark', {});
    expect(thrown(() => kit.restart()).message).toContain('Dated restart: event #1 Marked does not survive the codec');
  });

  it('encodes snapshots, events and payloads with the codec it is given', () => {
    let encoded = 0;
    const codec: TestCodec = { encode: (v) => { encoded++; return pack(v); }, decode: (b) => unpack(b) };
    const kit = testActor(counter, { codec });
    for (let i = 0; i < 3; i++) kit.send('Add', { by: 1 });
    expect(encoded).toBe(4); // three command payloads and the snapshot at version 3
    kit.restart();
    expect(encoded).toBe(4 + 1 + 3); // the live state's round trip and three events
  });
});
