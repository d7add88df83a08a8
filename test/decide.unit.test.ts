// decide.ts runs one command for both the node's shards and the test kit: for every way a
// command can be refused, a node and the kit answer with the same code and message.
import { describe, expect, it } from 'vitest';
import { defineActor } from '../runtime/define.ts';
import { Decider, DecideOutcome, type DecideStep } from '../runtime/decide.ts';
import { IdGenerator, IdUse, type CommandResult } from '../runtime/envelope.ts';
import { isTroupeError, reject, type WireError } from '../runtime/errors.ts';
import { Registry } from '../runtime/contracts/registry.ts';
import { ShardHost, type InboundCommand, type ShardContext } from '../runtime/node/shard.ts';
import { testActor } from '../runtime/testing/testkit.ts';
import type { CommandContext } from '../runtime/define.ts';

const probe = defineActor<{ n: number }>({
  type: 'Probe',
  initialState: () => ({ n: 0 }),
  commands: {
    Add: (_s, c: { n: number }) => ({ type: 'Added', payload: { n: c.n } }),
    Throw: () => { throw new Error('boom'); },
    Async: (async () => [{ type: 'Added', payload: { n: 1 } }]) as never,
    Undeclared: () => ({ type: 'Vanished', payload: {} }),
    NotADraft: () => 'Added' as never,
    NullDraft: () => [null] as never,
    BadSchema: () => ({ type: 'Added', payload: { n: 'one' } }),
    Refuse: () => reject('not-today', { day: 'Sunday' }),
    Nothing: () => undefined,
  },
  events: {
    Added: { evolve: (s, e: { n: number }) => ({ n: s.n + e.n }), schema: { type: 'object', properties: { n: { type: 'number' } }, required: ['n'] } },
  },
});

/** A shard with stub infrastructure: commands are decided as a node decides them, nothing is appended. */
function nodeShard(): { shard: ShardHost } {
  const registry = new Registry();
  registry.add(probe as never);
  const ctx = {
    options: { subjectPrefix: 'troupe', maxQueuedCommands: 100, maxCommandBytes: 1 << 20, source: 'test' },
    registry,
    store: { getSnapshot: () => undefined, historyAfter: () => [] },
    journal: {},
    publisher: {},
    writerId: 'w',
    ids: new IdGenerator(),
    scheduleFlush: () => {},
  } as unknown as ShardContext;
  const shard = new ShardHost(0, ctx);
  shard.state = 'ready';
  return { shard };
}

/** What the node answers to a command: its error, or its result. */
function nodeAnswer(shard: ShardHost, type: string, payload: unknown): { error: WireError | null; result: CommandResult | null } {
  let answer: { error: WireError | null; result: CommandResult | null } | null = null;
  const cmd: InboundCommand = {
    commandId: 'cmd-1', type, aggregateType: 'Probe', aggregateId: 'probe-1', payload, userId: null, correlationId: 'cmd-1',
    causationId: null, shard: 0, idUse: IdUse.GENERATED,
    reply: (error, result) => { answer = { error, result }; },
    replyStored: () => { throw new Error('nothing is stored here'); },
  };
  shard.submit(cmd);
  if (answer === null) return { error: null, result: null };
  return answer;
}

/** What the kit throws for the same command. */
function kitError(type: string, payload: unknown): unknown {
  try {
    testActor(probe, { aggregateId: 'probe-1' }).send(type, payload, { commandId: 'cmd-1' });
  } catch (e) {
    return e;
  }
  return null;
}

describe('decide.ts: the node and the test kit', () => {
  const cases: [string, string, unknown, string, RegExp][] = [
    ['an unknown command', 'Nope', {}, 'UNKNOWN_COMMAND_TYPE', /^actor Probe has no command "Nope"; it accepts Add, /],
    ['a decide that throws', 'Throw', {}, 'DECIDE_FAILED', /^Probe\.Throw threw: boom$/],
    ['a decide that returns a promise', 'Async', {}, 'VALIDATION', /^Probe\.Async returned a promise; decide must be synchronous/],
    ['a draft of an undeclared event type', 'Undeclared', {}, 'VALIDATION', /^Probe\.Undeclared returned event type "Vanished", which is not declared in events \(declared: Added\)$/],
    ['a draft that is not an object', 'NotADraft', {}, 'VALIDATION', /^Probe\.NotADraft returned "Added"; return \{ type, payload \} drafts/],
    ['a null draft', 'NullDraft', {}, 'VALIDATION', /^Probe\.NullDraft returned null; return \{ type, payload \} drafts/],
    ['a payload that violates its schema', 'BadSchema', {}, 'SCHEMA_VIOLATION', /n/],
    ['a domain rejection', 'Refuse', {}, 'DOMAIN_REJECTION', /^not-today$/],
  ];

  for (const [what, type, payload, code, message] of cases) {
    it(`refuses ${what} with ${code} and the same message`, () => {
      const { shard } = nodeShard();
      const node = nodeAnswer(shard, type, payload);
      const kit = kitError(type, payload);
      expect(node.error?.code, JSON.stringify(node)).toBe(code);
      expect(isTroupeError(kit, code as never), String(kit)).toBe(true);
      expect(node.error!.message).toMatch(message);
      expect(node.error!.message).toBe((kit as Error).message);
      // The node's error names the command and its actor, so a caller can retry or report it.
      expect(node.error!.data).toMatchObject({ aggregateType: 'Probe', aggregateId: 'probe-1', commandId: 'cmd-1' });
      expect(shard.queuedCommits).toBe(0);
    });
  }

  it('decides the same events and state on both sides', () => {
    const { shard } = nodeShard();
    const node = nodeAnswer(shard, 'Add', { n: 2 });
    expect(node).toEqual({ error: null, result: null }); // waiting for its append
    expect(shard.queuedCommits).toBe(1);
    const kit = testActor(probe);
    expect(kit.send('Add', { n: 2 }).map((e) => e.payload)).toEqual([{ n: 2 }]);
    expect(kit.state).toEqual({ n: 2 });
    // A command that decides nothing is answered at once (on an actor with nothing pending).
    expect(nodeAnswer(nodeShard().shard, 'Nothing', {}).result).toMatchObject({ version: 0, events: [], position: 0 });
  });

  it('defers a command when a write asks to, and applies nothing', () => {
    const step: DecideStep<null> = { freeze: false, write: () => false };
    const decider = new Decider(step);
    const ctx: CommandContext = { aggregateType: 'Probe', aggregateId: 'p', commandId: 'c', commandType: 'Add', userId: undefined, correlationId: 'c', version: 0, now: 0, schedule: () => {}, cancel: () => {}, timer: null };
    const state = { n: 0 };
    expect(decider.run(probe as never, state, 0, { n: 1 }, ctx, '1970-01-01T00:00:00.000Z', null)).toBe(DecideOutcome.DEFERRED);
    expect(decider.state).toBe(state);
  });

  it('leaves no unhandled rejection when an async decide rejects', async () => {
    const rejected: unknown[] = [];
    const onRejection = (e: unknown) => rejected.push(e);
    process.on('unhandledRejection', onRejection);
    try {
      const failing = defineActor<object>({
        type: 'Failing', initialState: () => ({}),
        commands: { Go: (async () => { throw new Error('later'); }) as never },
        events: { Moved: (s) => s },
      });
      let e: unknown = null;
      try { testActor(failing).send('Go', {}); } catch (x) { e = x; }
      expect(isTroupeError(e, 'VALIDATION')).toBe(true);
      await new Promise((r) => setTimeout(r, 20));
      expect(rejected).toEqual([]);
    } finally {
      process.off('unhandledRejection', onRejection);
    }
  });
});
