/**
 * The actors of the order fulfilment example (order-fulfilment.ts):
 *
 * - Order (id: the order id): PlaceOrder → OrderPlaced; CompleteOrder → OrderCompleted;
 *   CancelOrder → OrderCancelled. An order ends once: completing or cancelling it again is a no-op.
 * - Stock (id: the SKU): RestockItem → StockAdded, and StockReserved for each backorder it now
 *   covers, oldest first; ReserveStock → StockReserved, or StockBackordered when too little is
 *   on hand (an answer: the process waits for the StockReserved of a later restock, not a
 *   refusal); ReleaseStock → StockReleased for a reservation it holds.
 * - Payment (id: `pay-<orderId>`): TakePayment → PaymentTaken; RefundPayment → PaymentRefunded
 *   once, for a payment taken.
 *
 * Every command a process may send twice (a late event, a retry) is idempotent in the actor
 * too: the commandId makes a re-send harmless, the state makes a second, distinct request a no-op.
 */
import { defineActor, reject } from '../runtime/index.ts';

const obj = (properties: Record<string, unknown>, required: string[]) => ({ type: 'object', properties, required, additionalProperties: false });
const ID = { type: 'string', minLength: 1, maxLength: 128 };
const QTY = { type: 'integer', minimum: 1, maximum: 1_000_000 };
const AMOUNT = { type: 'integer', minimum: 1, maximum: 1_000_000_000 };

export interface PlaceOrder { readonly sku: string; readonly quantity: number; readonly amount: number }
export type OrderPlaced = PlaceOrder;
export interface OrderState { readonly status: 'none' | 'placed' | 'completed' | 'cancelled'; readonly reason: string | null }

export const order = defineActor<OrderState>({
  type: 'Order',
  initialState: () => ({ status: 'none', reason: null }),
  commands: {
    PlaceOrder: {
      schema: obj({ sku: ID, quantity: QTY, amount: AMOUNT }, ['sku', 'quantity', 'amount']),
      decide: (s, c: PlaceOrder) => {
        if (s.status !== 'none') reject('already-placed');
        return { type: 'OrderPlaced', payload: { sku: c.sku, quantity: c.quantity, amount: c.amount } };
      },
    },
    CompleteOrder: {
      schema: obj({}, []),
      decide: (s) => {
        if (s.status === 'none') reject('not-placed');
        return s.status === 'placed' ? { type: 'OrderCompleted', payload: {} } : undefined;
      },
    },
    CancelOrder: {
      schema: obj({ reason: { type: 'string', minLength: 1, maxLength: 200 } }, ['reason']),
      decide: (s, c: { reason: string }) => {
        if (s.status === 'none') reject('not-placed');
        return s.status === 'placed' ? { type: 'OrderCancelled', payload: { reason: c.reason } } : undefined;
      },
    },
  },
  events: {
    OrderPlaced: { schema: obj({ sku: ID, quantity: QTY, amount: AMOUNT }, ['sku', 'quantity', 'amount']), evolve: (s) => ({ ...s, status: 'placed' }) },
    OrderCompleted: { schema: obj({}, []), evolve: (s) => ({ ...s, status: 'completed' }) },
    OrderCancelled: { schema: obj({ reason: { type: 'string' } }, ['reason']), evolve: (s, e: { reason: string }) => ({ status: 'cancelled', reason: e.reason }) },
  },
});

export interface StockReservation { readonly orderId: string; readonly quantity: number }
export interface StockState {
  readonly onHand: number;
  /** Reserved quantity by order. */
  readonly reserved: Readonly<Record<string, number>>;
  /** Orders waiting for stock, in the order they came: filled by the next RestockItem that covers them. */
  readonly backorders: readonly StockReservation[];
}

export const stock = defineActor<StockState>({
  type: 'Stock',
  initialState: () => ({ onHand: 0, reserved: {}, backorders: [] }),
  commands: {
    RestockItem: {
      schema: obj({ quantity: QTY }, ['quantity']),
      decide: (s, c: { quantity: number }) => {
        const out: { type: string; payload: object }[] = [{ type: 'StockAdded', payload: { quantity: c.quantity } }];
        let onHand = s.onHand + c.quantity;
        for (const b of s.backorders) {
          if (b.quantity > onHand) break;
          onHand -= b.quantity;
          out.push({ type: 'StockReserved', payload: { orderId: b.orderId, quantity: b.quantity } });
        }
        return out;
      },
    },
    ReserveStock: {
      schema: obj({ orderId: ID, quantity: QTY }, ['orderId', 'quantity']),
      decide: (s, c: StockReservation) => {
        if (s.reserved[c.orderId] !== undefined || s.backorders.some((b) => b.orderId === c.orderId)) return undefined;
        return s.onHand >= c.quantity && s.backorders.length === 0
          ? { type: 'StockReserved', payload: { orderId: c.orderId, quantity: c.quantity } }
          : { type: 'StockBackordered', payload: { orderId: c.orderId, quantity: c.quantity } };
      },
    },
    ReleaseStock: {
      schema: obj({ orderId: ID }, ['orderId']),
      decide: (s, c: { orderId: string }) => {
        const quantity = s.reserved[c.orderId];
        return quantity === undefined ? undefined : { type: 'StockReleased', payload: { orderId: c.orderId, quantity } };
      },
    },
  },
  events: {
    StockAdded: { schema: obj({ quantity: QTY }, ['quantity']), evolve: (s, e: { quantity: number }) => ({ ...s, onHand: s.onHand + e.quantity }) },
    StockReserved: {
      schema: obj({ orderId: ID, quantity: QTY }, ['orderId', 'quantity']),
      evolve: (s, e: StockReservation) => ({
        onHand: s.onHand - e.quantity,
        reserved: { ...s.reserved, [e.orderId]: e.quantity },
        backorders: s.backorders.filter((b) => b.orderId !== e.orderId),
      }),
    },
    StockBackordered: {
      schema: obj({ orderId: ID, quantity: QTY }, ['orderId', 'quantity']),
      evolve: (s, e: StockReservation) => ({ ...s, backorders: [...s.backorders, { orderId: e.orderId, quantity: e.quantity }] }),
    },
    StockReleased: {
      schema: obj({ orderId: ID, quantity: QTY }, ['orderId', 'quantity']),
      evolve: (s, e: StockReservation) => {
        const { [e.orderId]: _released, ...reserved } = s.reserved;
        return { ...s, onHand: s.onHand + e.quantity, reserved };
      },
    },
  },
});

export interface PaymentState { readonly status: 'none' | 'taken' | 'refunded'; readonly orderId: string | null; readonly amount: number }

/** The Payment actor of an order. */
export function paymentIdFor(orderId: string): string {
  return `pay-${orderId}`;
}

export const payment = defineActor<PaymentState>({
  type: 'Payment',
  initialState: () => ({ status: 'none', orderId: null, amount: 0 }),
  commands: {
    TakePayment: {
      schema: obj({ orderId: ID, amount: AMOUNT }, ['orderId', 'amount']),
      decide: (s, c: { orderId: string; amount: number }) => (s.status === 'none' ? { type: 'PaymentTaken', payload: { orderId: c.orderId, amount: c.amount } } : undefined),
    },
    RefundPayment: {
      schema: obj({ orderId: ID }, ['orderId']),
      decide: (s) => (s.status === 'taken' ? { type: 'PaymentRefunded', payload: { orderId: s.orderId, amount: s.amount } } : undefined),
    },
  },
  events: {
    PaymentTaken: { schema: obj({ orderId: ID, amount: AMOUNT }, ['orderId', 'amount']), evolve: (_s, e: { orderId: string; amount: number }) => ({ status: 'taken', orderId: e.orderId, amount: e.amount }) },
    PaymentRefunded: { schema: obj({ orderId: ID, amount: AMOUNT }, ['orderId', 'amount']), evolve: (s) => ({ ...s, status: 'refunded' }) },
  },
});
