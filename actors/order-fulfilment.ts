/**
 * OrderFulfilment: a process manager (defineProcess) over Order, Stock and Payment (orders.ts).
 *
 *   OrderPlaced ──▶ ReserveStock + TakePayment, deadline `fulfilment` in 15 minutes
 *   waiting ──PaymentTaken and StockReserved (either order)──▶ CompleteOrder, cancel the deadline: completed
 *   waiting ──deadline──▶ ReleaseStock if reserved, RefundPayment if paid, CancelOrder: timed-out
 *   timed-out ──a late PaymentTaken or StockReserved──▶ refund it or release it again
 *
 * One process per order (its id is the order id). The events it waits for carry `orderId`.
 */
import { defineProcess, type EventDraft, type ProcessContext, type ProcessDefinition } from '../runtime/index.ts';
import { paymentIdFor, type OrderPlaced } from './orders.ts';

export const FULFILMENT_TIMEOUT_MS = 15 * 60_000;

export interface FulfilmentState {
  readonly status: 'new' | 'waiting' | 'completed' | 'timed-out';
  readonly sku: string;
  readonly quantity: number;
  readonly paid: boolean;
  readonly reserved: boolean;
}

const started = (s: FulfilmentState, e: { sku: string; quantity: number }): FulfilmentState => ({ ...s, status: 'waiting', sku: e.sku, quantity: e.quantity });

/** An order fulfilment process type (a factory, so tests can define one with a short deadline). */
export function defineOrderFulfilment(type: string, timeoutMs: number): ProcessDefinition<FulfilmentState> {
  return defineProcess<FulfilmentState>({
    type,
    correlate: {
      OrderPlaced: (e) => (e.aggregateType === 'Order' ? e.aggregateId : null),
      PaymentTaken: (e) => (e.payload as { orderId: string }).orderId,
      StockReserved: (e) => (e.payload as { orderId: string }).orderId,
    },
    startOn: ['OrderPlaced'],
    initialState: () => ({ status: 'new', sku: '', quantity: 0, paid: false, reserved: false }),
    events: {
      FulfilmentStarted: started,
      PaymentConfirmed: (s) => ({ ...s, paid: true }),
      StockConfirmed: (s) => ({ ...s, reserved: true }),
      FulfilmentCompleted: (s) => ({ ...s, status: 'completed' }),
      FulfilmentExpired: (s) => ({ ...s, status: 'timed-out' }),
      LateArrivalReversed: (s) => s,
    },
    on: {
      OrderPlaced: (s, e, ctx) => {
        if (s.status !== 'new') return undefined;
        const o = e.payload as OrderPlaced;
        ctx.send('Stock', o.sku, 'ReserveStock', { orderId: ctx.processId, quantity: o.quantity });
        ctx.send('Payment', paymentIdFor(ctx.processId), 'TakePayment', { orderId: ctx.processId, amount: o.amount });
        ctx.deadline('fulfilment', { after: timeoutMs });
        return { type: 'FulfilmentStarted', payload: { sku: o.sku, quantity: o.quantity } };
      },
      PaymentTaken: (s, _e, ctx) => arrived(s, ctx, 'paid'),
      StockReserved: (s, _e, ctx) => arrived(s, ctx, 'reserved'),
    },
    deadlines: {
      fulfilment: (s, _d, ctx) => {
        if (s.status !== 'waiting') return undefined;
        if (s.reserved) ctx.send('Stock', s.sku, 'ReleaseStock', { orderId: ctx.processId });
        if (s.paid) ctx.send('Payment', paymentIdFor(ctx.processId), 'RefundPayment', { orderId: ctx.processId });
        ctx.send('Order', ctx.processId, 'CancelOrder', { reason: 'fulfilment-timed-out' });
        return { type: 'FulfilmentExpired', payload: { paid: s.paid, reserved: s.reserved } };
      },
    },
  });

  function arrived(s: FulfilmentState, ctx: ProcessContext, what: 'paid' | 'reserved'): EventDraft | EventDraft[] | undefined {
    if (s.status === 'timed-out') {
      // Too late: undo what arrived after the compensation.
      if (what === 'paid') ctx.send('Payment', paymentIdFor(ctx.processId), 'RefundPayment', { orderId: ctx.processId });
      else ctx.send('Stock', s.sku, 'ReleaseStock', { orderId: ctx.processId });
      return { type: 'LateArrivalReversed', payload: { what } };
    }
    if (s.status !== 'waiting' || s[what]) return undefined;
    const confirmed = { type: what === 'paid' ? 'PaymentConfirmed' : 'StockConfirmed', payload: {} };
    if (!(what === 'paid' ? s.reserved : s.paid)) return confirmed;
    ctx.send('Order', ctx.processId, 'CompleteOrder', {});
    ctx.cancelDeadline('fulfilment');
    return [confirmed, { type: 'FulfilmentCompleted', payload: {} }];
  }
}

/** The example: one fulfilment process per order, timing out after 15 minutes. */
export const orderFulfilment = defineOrderFulfilment('OrderFulfilment', FULFILMENT_TIMEOUT_MS);
