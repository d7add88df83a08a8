// Sagas that wait: a step waits for an event matched by correlation, and its deadline
// compensates the steps done so far when the event does not come in time.
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { paymentIdFor, type OrderPlaced } from '../../actors/orders.ts';
import { saga, type SagaDefinition } from '../../runtime/consumers/saga.ts';
import { InvalidOptionError } from '../../runtime/errors.ts';
import { Troupe } from '../../runtime/node/system.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { eventually, freshStream } from '../helpers/troupe.ts';

const ORDERS = fileURLToPath(new URL('../../actors/orders.ts', import.meta.url));
const DEADLINE_MS = 1_500;

const reserveAndPay: SagaDefinition = {
  name: 'reserve-and-pay',
  startOn: 'OrderPlaced',
  steps: [
    {
      name: 'take-payment',
      run: (s) => s.send('Payment', paymentIdFor(s.event.aggregateId), 'TakePayment', { orderId: s.event.aggregateId, amount: (s.event.payload as OrderPlaced).amount }),
      compensate: (s) => s.send('Payment', paymentIdFor(s.event.aggregateId), 'RefundPayment', { orderId: s.event.aggregateId }),
    },
    {
      name: 'reserve-stock',
      run: (s) => s.send('Stock', (s.event.payload as OrderPlaced).sku, 'ReserveStock', { orderId: s.event.aggregateId, quantity: (s.event.payload as OrderPlaced).quantity }),
      compensate: (s) => s.send('Stock', (s.event.payload as OrderPlaced).sku, 'ReleaseStock', { orderId: s.event.aggregateId }),
    },
    {
      name: 'stock-reserved',
      waitFor: { eventType: 'StockReserved', correlate: (e) => (e.payload as { orderId: string }).orderId, key: (s) => s.event.aggregateId },
      deadlineMs: DEADLINE_MS,
    },
    { name: 'complete', run: (s) => s.send('Order', s.event.aggregateId, 'CompleteOrder', {}) },
  ],
};

describe('sagas that wait', () => {
  const nats = useNatsServer();
  const { stream, subjectPrefix } = freshStream('SAGAW');
  let node: Troupe;
  const stops: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    node = await Troupe.start({ actors: [ORDERS], servers: nats.url, dataDir: tempDir(), workers: 1, shards: 16, stream, subjectPrefix });
  });
  afterEach(async () => {
    for (const s of stops.splice(0)) await s();
  });
  afterAll(async () => {
    await node?.stop();
  });

  async function run(name: string, after: number, deadlineMs = DEADLINE_MS) {
    const steps = reserveAndPay.steps.map((st) => (st.deadlineMs === undefined ? st : { ...st, deadlineMs }));
    const s = await saga({ ...reserveAndPay, name, steps }, { sender: node, servers: nats.url, stream, subjectPrefix, dataDir: tempDir(), from: { after }, retry: { initialDelayMs: 50, maxDelayMs: 200 } });
    stops.push(() => s.stop());
    return s;
  }
  const types = async (type: string, id: string) => (await node.history(type, id)).map((e) => e.eventType);

  it('refuses a step with both run and waitFor, and a deadline without a wait', async () => {
    const step = reserveAndPay.steps[2]!;
    await expect(saga({ ...reserveAndPay, steps: [{ ...step, run: () => null }] }, { sender: node, servers: nats.url, dataDir: tempDir() })).rejects.toThrow(InvalidOptionError);
    await expect(saga({ ...reserveAndPay, steps: [{ name: 'x', run: () => null, deadlineMs: 5 }] }, { sender: node, servers: nats.url, dataDir: tempDir() })).rejects.toThrow(/deadlineMs must be a positive number of ms, on a waitFor step/);
  });

  it('waits for the correlated event, then runs the steps after it', async () => {
    const start = await node.send('Stock', 'sku-w1', 'RestockItem', { quantity: 1 });
    const s = await run('wait-completes', start.position, 60_000);
    const placed = await node.send('Order', 'w-1', 'PlaceOrder', { sku: 'sku-w1', quantity: 2, amount: 10 });
    const sagaId = placed.events[0]!.eventId;
    await eventually(async () => expect(s.status(sagaId)).toMatchObject({ status: 'waiting', completed: ['take-payment', 'reserve-stock'], waiting: { step: 'stock-reserved', key: 'w-1' } }), 20_000);

    const restock = await node.send('Stock', 'sku-w1', 'RestockItem', { quantity: 1 });
    await eventually(async () => expect(s.status(sagaId)?.status).toBe('completed'), 20_000);
    expect(s.status(sagaId)).toMatchObject({
      completed: ['take-payment', 'reserve-stock', 'stock-reserved', 'complete'],
      data: { 'stock-reserved': { eventId: restock.events[1]!.eventId, eventType: 'StockReserved', payload: { orderId: 'w-1', quantity: 2 } } },
    });
    expect(await types('Order', 'w-1')).toEqual(['OrderPlaced', 'OrderCompleted']);
  });

  it('compensates the steps done so far when its deadline passes without the event, and ignores the event after', async () => {
    const start = await node.send('Stock', 'sku-w2', 'RestockItem', { quantity: 1 });
    const s = await run('wait-expires', start.position);
    const placed = await node.send('Order', 'w-2', 'PlaceOrder', { sku: 'sku-w2', quantity: 2, amount: 10 });
    const sagaId = placed.events[0]!.eventId;
    const t0 = Date.now();
    await eventually(async () => expect(s.status(sagaId)?.status).toBe('compensated'), 20_000);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(DEADLINE_MS - 500);
    expect(s.status(sagaId)).toMatchObject({
      completed: ['take-payment', 'reserve-stock'],
      compensated: ['reserve-stock', 'take-payment'],
      failure: { step: 'stock-reserved', reason: 'DEADLINE' },
    });
    expect(await types('Payment', paymentIdFor('w-2'))).toEqual(['PaymentTaken', 'PaymentRefunded']);

    // The stock arrives too late: the saga has ended and does not complete the order.
    await node.send('Stock', 'sku-w2', 'RestockItem', { quantity: 1 });
    await s.consumer.caughtUp();
    expect(s.status(sagaId)?.status).toBe('compensated');
    expect(await types('Order', 'w-2')).toEqual(['OrderPlaced']);
  });
});
