// defineProcess: a bad definition is refused with a typed error naming the fix; a process is
// an actor whose reactions record their commands (the outbox) and deadlines in the same commit.
import { describe, expect, it } from 'vitest';
import { defineOrderFulfilment, orderFulfilment, FULFILMENT_TIMEOUT_MS } from '../../actors/order-fulfilment.ts';
import { defineProcess, isProcessDefinition, issuedCommandId, ProcessCommand, ProcessEvent, type ProcessConfig, type ProcessInput } from '../../runtime/process.ts';
import { isActorDefinition } from '../../runtime/define.ts';
import { InvalidDefinitionError, isTroupeError } from '../../runtime/errors.ts';
import { DEFAULT_TEST_NOW, testActor } from '../../runtime/testing/index.ts';
import type { CommandContext } from '../../runtime/define.ts';

function base(): ProcessConfig<{ n: number }> {
  return {
    type: 'Probe',
    correlate: { ThingHappened: (e) => e.aggregateId },
    initialState: () => ({ n: 0 }),
    events: { ThingNoted: (s) => ({ n: s.n + 1 }) },
    on: { ThingHappened: () => ({ type: 'ThingNoted', payload: {} }) },
  };
}

function refused(config: unknown): InvalidDefinitionError {
  try {
    defineProcess(config as ProcessConfig<unknown>);
  } catch (e) {
    expect(isTroupeError(e, 'INVALID_DEFINITION')).toBe(true);
    return e as InvalidDefinitionError;
  }
  throw new Error('the definition was accepted');
}

function input(eventType: string, aggregateId: string, payload: object, eventId = `ev-${eventType}-${aggregateId}`): ProcessInput {
  return { eventId, eventType, aggregateType: eventType === 'OrderPlaced' ? 'Order' : 'X', aggregateId, sequence: 1, timestamp: new Date(DEFAULT_TEST_NOW).toISOString(), correlationId: 'corr-1', userId: null, payload };
}

describe('defineProcess validation', () => {
  it('returns an actor definition that is also a process definition', () => {
    const def = defineProcess(base());
    expect(isActorDefinition(def)).toBe(true);
    expect(isProcessDefinition(def)).toBe(true);
    expect([...def.commands.keys()].sort()).toEqual([ProcessCommand.EXPIRE, ProcessCommand.RECEIVE]);
    expect([...def.events.keys()]).toEqual(['ThingNoted', ProcessEvent.COMMANDS_ISSUED, ProcessEvent.DEADLINE_SET, ProcessEvent.DEADLINE_CLEARED]);
  });

  it('refuses a definition that correlates no event type', () => {
    expect(refused({ ...base(), correlate: {} }).message).toMatch(/correlate names no event type/);
  });

  it('refuses a correlated event type without a reaction, and a reaction without a correlation', () => {
    expect(refused({ ...base(), on: {} }).message).toMatch(/correlates ThingHappened but has no reaction on\.ThingHappened/);
    expect(refused({ ...base(), on: { ThingHappened: () => undefined, OtherHappened: () => undefined } }).message).toMatch(/on\.OtherHappened but no correlate\.OtherHappened/);
  });

  it('refuses a correlate entry that is not a function', () => {
    expect(refused({ ...base(), correlate: { ThingHappened: 'orderId' } }).message).toMatch(/correlate\.ThingHappened must be a function/);
  });

  it('refuses startOn naming an event type it does not correlate', () => {
    expect(refused({ ...base(), startOn: ['OtherHappened'] }).message).toMatch(/startOn lists OtherHappened, which is not correlated/);
    expect(refused({ ...base(), startOn: [] }).message).toMatch(/startOn is empty/);
  });

  it('refuses deadline keys that are not names, and deadlines that are not functions', () => {
    expect(refused({ ...base(), deadlines: { 'a b': () => undefined } }).message).toMatch(/deadline key "a b"/);
    expect(refused({ ...base(), deadlines: { late: 5 } }).message).toMatch(/deadlines\.late must be a function/);
  });

  it('refuses events named like Troupe\'s own process events, and reacting to them', () => {
    expect(refused({ ...base(), events: { ...base().events, ProcessCommandsIssued: (s: unknown) => s } }).message).toMatch(/ProcessCommandsIssued is the name of Troupe's own event/);
    expect(refused({ ...base(), correlate: { ProcessDeadlineSet: () => 'x' }, on: { ProcessDeadlineSet: () => undefined } }).message).toMatch(/ProcessDeadlineSet is Troupe's own event/);
  });

  it('refuses what an actor definition refuses: a bad type name, an event not in the past tense', () => {
    expect(refused({ ...base(), type: 'no spaces' }).message).toMatch(/actor type name must match/);
    expect(refused({ ...base(), events: { NoteThing: (s: unknown) => s } }).message).toMatch(/past tense/);
  });
});

describe('a process reaction', () => {
  it('records its events, its deadline and its outbox in one commit, with deterministic commandIds', () => {
    const kit = testActor(orderFulfilment, { aggregateId: 'o-1' });
    const placed = input('OrderPlaced', 'o-1', { sku: 'sku-1', quantity: 2, amount: 500 }, 'ev-placed');
    const events = kit.send(ProcessCommand.RECEIVE, { event: placed });
    expect(events.map((e) => e.type)).toEqual(['FulfilmentStarted', ProcessEvent.DEADLINE_SET, ProcessEvent.COMMANDS_ISSUED]);
    expect(events[1]!.payload).toEqual({ key: 'fulfilment', dueAt: DEFAULT_TEST_NOW + FULFILMENT_TIMEOUT_MS, timer: true });
    expect(events[2]!.payload).toEqual({
      causationId: 'ev-placed',
      correlationId: 'cmd-1',
      commands: [
        { aggregateType: 'Stock', aggregateId: 'sku-1', type: 'ReserveStock', payload: { orderId: 'o-1', quantity: 2 }, commandId: issuedCommandId('OrderFulfilment', 'ev-placed', 0) },
        { aggregateType: 'Payment', aggregateId: 'pay-o-1', type: 'TakePayment', payload: { orderId: 'o-1', amount: 500 }, commandId: issuedCommandId('OrderFulfilment', 'ev-placed', 1) },
      ],
    });
    expect(kit.state.deadlines).toEqual({ fulfilment: DEFAULT_TEST_NOW + FULFILMENT_TIMEOUT_MS });
    kit.restart();
  });

  it('waits for both PaymentTaken and StockReserved, in either order, then completes and cancels its deadline', () => {
    for (const order of [['PaymentTaken', 'StockReserved'], ['StockReserved', 'PaymentTaken']] as const) {
      const kit = testActor(orderFulfilment, { aggregateId: 'o-2' });
      kit.send(ProcessCommand.RECEIVE, { event: input('OrderPlaced', 'o-2', { sku: 'sku-1', quantity: 1, amount: 10 }) });
      expect(kit.send(ProcessCommand.RECEIVE, { event: input(order[0], 'x', { orderId: 'o-2' }) }).map((e) => e.type)).toEqual([order[0] === 'PaymentTaken' ? 'PaymentConfirmed' : 'StockConfirmed']);
      const last = kit.send(ProcessCommand.RECEIVE, { event: input(order[1], 'y', { orderId: 'o-2' }) });
      expect(last.map((e) => e.type)).toEqual([order[1] === 'PaymentTaken' ? 'PaymentConfirmed' : 'StockConfirmed', 'FulfilmentCompleted', ProcessEvent.DEADLINE_CLEARED, ProcessEvent.COMMANDS_ISSUED]);
      expect((last[3]!.payload as { commands: { type: string }[] }).commands.map((c) => c.type)).toEqual(['CompleteOrder']);
      expect(kit.state).toEqual({ state: { status: 'completed', sku: 'sku-1', quantity: 1, paid: true, reserved: true }, deadlines: {} });
      // The deadline is gone: expiring it now does nothing.
      expect(kit.send(ProcessCommand.EXPIRE, { key: 'fulfilment' })).toEqual([]);
    }
  });

  it('ignores an event that only continues a process that has not started', () => {
    const kit = testActor(orderFulfilment, { aggregateId: 'o-3' });
    expect(kit.send(ProcessCommand.RECEIVE, { event: input('PaymentTaken', 'p', { orderId: 'o-3' }) })).toEqual([]);
    expect(kit.version).toBe(0);
  });

  it('compensates what arrived when its deadline expires, then reverses a late arrival', () => {
    const kit = testActor(orderFulfilment, { aggregateId: 'o-4' });
    kit.send(ProcessCommand.RECEIVE, { event: input('OrderPlaced', 'o-4', { sku: 'sku-9', quantity: 1, amount: 10 }) });
    kit.send(ProcessCommand.RECEIVE, { event: input('PaymentTaken', 'p', { orderId: 'o-4' }) });
    const expired = kit.send(ProcessCommand.EXPIRE, { key: 'fulfilment' }, { commandId: 'expire-1' });
    expect(expired.map((e) => e.type)).toEqual(['FulfilmentExpired', ProcessEvent.DEADLINE_CLEARED, ProcessEvent.COMMANDS_ISSUED]);
    expect(expired[1]!.payload).toEqual({ key: 'fulfilment', reason: 'expired' });
    expect(expired[2]!.payload).toMatchObject({ causationId: 'expire-1', commands: [{ type: 'RefundPayment', commandId: issuedCommandId('OrderFulfilment', 'expire-1', 0) }, { type: 'CancelOrder' }] });
    const late = kit.send(ProcessCommand.RECEIVE, { event: input('StockReserved', 's', { orderId: 'o-4' }) });
    expect((late.at(-1)!.payload as { commands: { type: string; aggregateId: string }[] }).commands).toMatchObject([{ type: 'ReleaseStock', aggregateId: 'sku-9' }]);
    kit.restart();
  });

  it('schedules its deadline as a durable timer of its own actor, fires it to compensate, and cancels it on completion', () => {
    const def = defineOrderFulfilment('TimedFulfilment', 1_000);
    const kit = testActor(def, { aggregateId: 'o-5', freeze: false });
    const events = kit.send(ProcessCommand.RECEIVE, { event: input('OrderPlaced', 'o-5', { sku: 's', quantity: 1, amount: 1 }) });
    expect(events[1]!.payload).toEqual({ key: 'fulfilment', dueAt: DEFAULT_TEST_NOW + 1_000, timer: true });
    expect(kit.timers).toMatchObject([{ key: 'fulfilment', dueAt: DEFAULT_TEST_NOW + 1_000, command: ProcessCommand.EXPIRE, payload: { key: 'fulfilment' } }]);
    kit.send(ProcessCommand.RECEIVE, { event: input('PaymentTaken', 'p', { orderId: 'o-5' }) });
    kit.send(ProcessCommand.RECEIVE, { event: input('StockReserved', 's', { orderId: 'o-5' }) });
    expect(kit.timers).toEqual([]);

    const late = testActor(def, { aggregateId: 'o-6', freeze: false });
    late.send(ProcessCommand.RECEIVE, { event: input('OrderPlaced', 'o-6', { sku: 's', quantity: 1, amount: 1 }) });
    expect(late.fire('fulfilment').map((e) => e.type)).toEqual(['FulfilmentExpired', ProcessEvent.DEADLINE_CLEARED, ProcessEvent.COMMANDS_ISSUED]);
    expect(late.timers).toEqual([]);
  });

  it('refuses a deadline it does not declare, an undeclared expiry, and a reaction that returns Troupe\'s own events', () => {
    const def = defineProcess({
      ...base(), type: 'Probe2',
      on: { ThingHappened: (_s, _e, ctx) => ctx.deadline('nope', { after: 1 }) },
    });
    const kit = testActor(def);
    expect(() => kit.send(ProcessCommand.RECEIVE, { event: input('ThingHappened', 'a', {}) })).toThrow(/deadline "nope" is not declared/);
    expect(() => kit.send(ProcessCommand.EXPIRE, { key: 'nope' })).toThrow(/has no deadline "nope"/);
    const sneaky = defineProcess({ ...base(), type: 'Probe3', on: { ThingHappened: () => ({ type: ProcessEvent.COMMANDS_ISSUED, payload: {} }) } });
    expect(() => testActor(sneaky).send(ProcessCommand.RECEIVE, { event: input('ThingHappened', 'a', {}) })).toThrow(/Troupe's own event; use ctx\.send/);
  });
});
