// Process managers against a real nats-server: OrderFulfilment (actors/order-fulfilment.ts)
// reserves stock and takes payment for an order, waits for both events in either order, and
// completes; or its deadline expires and it compensates. Every event it reacts to is handled
// once and every command it issues is committed once, when its events are delivered again.
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { actorModules } from '../../actors/index.ts';
import { orderFulfilment, type FulfilmentState } from '../../actors/order-fulfilment.ts';
import { paymentIdFor } from '../../actors/orders.ts';
import { defineActor } from '../../runtime/define.ts';
import type { CommandResult, Command } from '../../runtime/envelope.ts';
import { JournalUnavailableError } from '../../runtime/errors.ts';
import { processManager, receiveCommandId, type ProcessManager } from '../../runtime/consumers/process-manager.ts';
import type { CommandSender } from '../../runtime/consumers/saga.ts';
import { ProcessCommand, ProcessEvent, type ProcessState } from '../../runtime/process.ts';
import { Troupe } from '../../runtime/node/system.ts';
import { testActor } from '../../runtime/testing/index.ts';
import { fastFulfilment, FAST_FULFILMENT_TIMEOUT_MS } from '../fixtures/fast-fulfilment.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { eventually, freshStream } from '../helpers/troupe.ts';

const ORDERS = fileURLToPath(new URL('../../actors/orders.ts', import.meta.url));
const FULFILMENT = fileURLToPath(new URL('../../actors/order-fulfilment.ts', import.meta.url));
const FAST = fileURLToPath(new URL('../fixtures/fast-fulfilment.ts', import.meta.url));

// Durable timers (ctx.schedule in decide) are what fire a deadline by itself. Until the runtime
// has them, a deadline is recorded and fires only through ProcessManager.expire.
const timerProbe = defineActor({
  type: 'TimerProbe',
  initialState: () => ({}),
  commands: { Probe: (_s, _c, ctx) => ({ type: 'Probed', payload: { timers: typeof (ctx as { schedule?: unknown }).schedule === 'function' } }) },
  events: { Probed: (s) => s },
});
const timersAvailable = (testActor(timerProbe).send('Probe')[0]!.payload as { timers: boolean }).timers;

describe('process managers', () => {
  const nats = useNatsServer();
  const { stream, subjectPrefix } = freshStream('PROC');
  let node: Troupe;
  const stops: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    node = await Troupe.start({ actors: [...actorModules, ORDERS, FULFILMENT, FAST], servers: nats.url, dataDir: tempDir(), workers: 1, shards: 16, stream, subjectPrefix });
  });
  afterEach(async () => {
    for (const s of stops.splice(0)) await s();
  });
  afterAll(async () => {
    await node?.stop();
  });

  /** Run a process manager over the log from `after` on, under its own consumer name. */
  async function run(name: string, after: number, sender: CommandSender = node, def = orderFulfilment): Promise<ProcessManager<FulfilmentState>> {
    const pm = await processManager(def, { name, sender, servers: nats.url, stream, subjectPrefix, dataDir: tempDir(), from: { after }, retry: { initialDelayMs: 50, maxDelayMs: 200 } });
    stops.push(() => pm.stop());
    return pm;
  }

  const processOf = async (id: string, type = 'OrderFulfilment') => (await node.query<ProcessState<FulfilmentState>>(type, id)).state;
  const types = async (type: string, id: string) => (await node.history(type, id)).map((e) => e.eventType);

  /** A sender that records every command and its result, and loses the reply of the first send of the listed command types. */
  function recordingSender(loseReplyOf: readonly string[] = []): CommandSender & { sent: { aggregateType: string; command: Command; result: CommandResult }[] } {
    const sent: { aggregateType: string; command: Command; result: CommandResult }[] = [];
    const lost = new Set<string>();
    return {
      sent,
      async send(aggregateType, aggregateId, command) {
        const result = await node.send(aggregateType, aggregateId, command);
        sent.push({ aggregateType, command, result });
        if (loseReplyOf.includes(command.type) && !lost.has(command.type)) {
          lost.add(command.type);
          throw new JournalUnavailableError('the reply was lost on the way back');
        }
        return result;
      },
    };
  }

  it('reserves stock and takes payment for an order, then completes it, each command caused by the event and in its correlation', async () => {
    const start = await node.send('Stock', 'sku-a', 'RestockItem', { quantity: 5 });
    await run('fulfil-happy', start.position);
    const placed = await node.send('Order', 'o-1', 'PlaceOrder', { sku: 'sku-a', quantity: 2, amount: 900 }, { correlationId: 'checkout-1' });

    await eventually(async () => expect((await processOf('o-1')).state.status).toBe('completed'), 20_000);
    expect(await processOf('o-1')).toEqual({ state: { status: 'completed', sku: 'sku-a', quantity: 2, paid: true, reserved: true }, deadlines: {} });
    await eventually(async () => expect(await types('Order', 'o-1')).toEqual(['OrderPlaced', 'OrderCompleted']), 10_000);
    expect((await node.query<{ reserved: Record<string, number> }>('Stock', 'sku-a')).state.reserved).toEqual({ 'o-1': 2 });

    const placedId = placed.events[0]!.eventId;
    const [taken] = await node.history('Payment', paymentIdFor('o-1'));
    expect(taken).toMatchObject({ eventType: 'PaymentTaken', payload: { orderId: 'o-1', amount: 900 }, correlationId: 'checkout-1', commandCausationId: placedId, commandId: `OrderFulfilment:${placedId}:1` });
    const pm = await node.history('OrderFulfilment', 'o-1');
    expect(pm[0]).toMatchObject({ eventType: 'FulfilmentStarted', commandId: receiveCommandId('OrderFulfilment', placedId), commandCausationId: placedId, correlationId: 'checkout-1' });
    expect(pm.map((e) => e.eventType)).toEqual([
      'FulfilmentStarted', ProcessEvent.DEADLINE_SET, ProcessEvent.COMMANDS_ISSUED,
      'StockConfirmed',
      'PaymentConfirmed', 'FulfilmentCompleted', ProcessEvent.DEADLINE_CLEARED, ProcessEvent.COMMANDS_ISSUED,
    ]);
  });

  it('waits for stock that arrives after the payment, and completes then', async () => {
    const start = await node.send('Stock', 'sku-b', 'RestockItem', { quantity: 1 });
    await run('fulfil-late-stock', start.position);
    await node.send('Order', 'o-2', 'PlaceOrder', { sku: 'sku-b', quantity: 3, amount: 50 });

    // Too little stock: backordered; the payment goes through and the process waits.
    await eventually(async () => expect((await processOf('o-2')).state).toMatchObject({ status: 'waiting', paid: true, reserved: false }), 20_000);
    expect(await types('Stock', 'sku-b')).toEqual(['StockAdded', 'StockBackordered']);
    await node.send('Stock', 'sku-b', 'RestockItem', { quantity: 2 });

    await eventually(async () => expect((await processOf('o-2')).state.status).toBe('completed'), 20_000);
    expect(await types('OrderFulfilment', 'o-2')).toEqual([
      'FulfilmentStarted', ProcessEvent.DEADLINE_SET, ProcessEvent.COMMANDS_ISSUED,
      'PaymentConfirmed',
      'StockConfirmed', 'FulfilmentCompleted', ProcessEvent.DEADLINE_CLEARED, ProcessEvent.COMMANDS_ISSUED,
    ]);
    await eventually(async () => expect(await types('Order', 'o-2')).toEqual(['OrderPlaced', 'OrderCompleted']), 10_000);
  });

  it('handles each event once and commits each issued command once when its events are delivered again', async () => {
    const start = await node.send('Stock', 'sku-c', 'RestockItem', { quantity: 1 });
    // The first try of TakePayment and of a ReceiveEvent reaches the actor but its reply is lost:
    // the consumer retries the event, and the node answers the re-sent commandId as a duplicate.
    const first = recordingSender(['TakePayment', ProcessCommand.RECEIVE]);
    const pm = await run('fulfil-redelivered', start.position, first);
    await node.send('Order', 'o-3', 'PlaceOrder', { sku: 'sku-c', quantity: 1, amount: 70 });
    await eventually(async () => expect(await types('Order', 'o-3')).toEqual(['OrderPlaced', 'OrderCompleted']), 20_000);
    await pm.consumer.caughtUp();
    await pm.stop();

    const take = first.sent.filter((s) => s.command.type === 'TakePayment');
    expect(take.map((s) => s.result.duplicate)).toEqual([false, true]);
    expect(new Set(take.map((s) => s.command.commandId)).size).toBe(1);
    const receivedTwice = first.sent.filter((s) => s.command.type === ProcessCommand.RECEIVE);
    expect(receivedTwice.filter((s) => s.result.duplicate)).toHaveLength(1);

    // Replay every event of the test under a new consumer name: all of it is sent again, nothing is decided again.
    const before = { pm: await node.history('OrderFulfilment', 'o-3'), stock: await types('Stock', 'sku-c'), pay: await types('Payment', paymentIdFor('o-3')), order: await types('Order', 'o-3') };
    const again = recordingSender();
    const replay = await run('fulfil-replayed', start.position, again);
    await replay.consumer.caughtUp();
    expect(again.sent.map((s) => s.command.type).sort()).toEqual(['CompleteOrder', 'ReceiveEvent', 'ReceiveEvent', 'ReceiveEvent', 'ReserveStock', 'TakePayment']);
    expect(again.sent.every((s) => s.result.duplicate)).toBe(true);
    expect(await node.history('OrderFulfilment', 'o-3')).toEqual(before.pm);
    expect({ stock: await types('Stock', 'sku-c'), pay: await types('Payment', paymentIdFor('o-3')), order: await types('Order', 'o-3') })
      .toEqual({ stock: before.stock, pay: before.pay, order: before.order });
    expect(before.pay).toEqual(['PaymentTaken']);
    expect(before.stock).toEqual(['StockAdded', 'StockReserved']);
    // One commit per event the process reacted to: OrderPlaced, StockReserved, PaymentTaken.
    const reactedTo = [...(await node.history('Order', 'o-3')).slice(0, 1), ...(await node.history('Stock', 'sku-c')).slice(1), ...(await node.history('Payment', paymentIdFor('o-3')))];
    expect([...new Set(before.pm.map((e) => e.commandId))].sort()).toEqual(reactedTo.map((e) => receiveCommandId('OrderFulfilment', e.eventId)).sort());
  });

  it('compensates when its deadline is expired: refunds the payment, cancels the order, and releases stock that arrives late', async () => {
    const start = await node.send('Stock', 'sku-d', 'RestockItem', { quantity: 1 });
    const pm = await run('fulfil-expired', start.position);
    await node.send('Order', 'o-4', 'PlaceOrder', { sku: 'sku-d', quantity: 2, amount: 30 });
    await eventually(async () => expect((await processOf('o-4')).state).toMatchObject({ status: 'waiting', paid: true, reserved: false }), 20_000);

    const r = await pm.expire('o-4', 'fulfilment');
    expect(r.events.map((e) => e.eventType)).toEqual(['FulfilmentExpired', ProcessEvent.DEADLINE_CLEARED, ProcessEvent.COMMANDS_ISSUED]);
    await eventually(async () => expect(await types('Order', 'o-4')).toEqual(['OrderPlaced', 'OrderCancelled']), 20_000);
    await eventually(async () => expect(await types('Payment', paymentIdFor('o-4'))).toEqual(['PaymentTaken', 'PaymentRefunded']), 10_000);
    // Expiring it again does nothing: the deadline is no longer pending.
    expect((await pm.expire('o-4', 'fulfilment')).events).toEqual([]);

    // The stock arrives after the process gave up: it is released again.
    await node.send('Stock', 'sku-d', 'RestockItem', { quantity: 1 });
    await eventually(async () => expect(await types('Stock', 'sku-d')).toEqual(['StockAdded', 'StockBackordered', 'StockAdded', 'StockReserved', 'StockReleased']), 20_000);
    expect((await node.query<{ onHand: number; reserved: object }>('Stock', 'sku-d')).state).toMatchObject({ onHand: 2, reserved: {} });
    expect((await processOf('o-4')).state.status).toBe('timed-out');
  });

  it.skipIf(!timersAvailable)('times out by its own durable timer and compensates (needs ctx.schedule: durable timers)', async () => {
    const start = await node.send('Stock', 'sku-e', 'RestockItem', { quantity: 1 });
    await run('fulfil-timer', start.position, node, fastFulfilment);
    const placedAt = Date.now();
    await node.send('Order', 'o-5', 'PlaceOrder', { sku: 'sku-e', quantity: 2, amount: 40 });
    await eventually(async () => expect((await processOf('o-5', 'FastFulfilment')).state.status).toBe('timed-out'), 30_000);
    expect(Date.now() - placedAt).toBeGreaterThanOrEqual(FAST_FULFILMENT_TIMEOUT_MS);
    const pm = await node.history('FastFulfilment', 'o-5');
    expect(pm.find((e) => e.eventType === ProcessEvent.DEADLINE_SET)?.payload).toMatchObject({ key: 'fulfilment', timer: true });
    expect(pm.find((e) => e.eventType === ProcessEvent.DEADLINE_CLEARED)?.payload).toEqual({ key: 'fulfilment', reason: 'expired' });
    await eventually(async () => expect(await types('Order', 'o-5')).toEqual(['OrderPlaced', 'OrderCancelled']), 20_000);
    await eventually(async () => expect(await types('Payment', paymentIdFor('o-5'))).toEqual(['PaymentTaken', 'PaymentRefunded']), 10_000);
  });
});
