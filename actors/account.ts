/**
 * Account: the ledger workload's actor (docs/performance.md), written to be the benchmark's hot
 * path. Each decide returns one event draft (no array) with a fixed-shape payload, and each
 * evolve returns a fixed-shape state literal (no spread), so V8 keeps one hidden class for
 * each and a command costs two small allocations.
 */
import { defineActor, reject } from '../runtime/index.ts';

export interface AccountState {
  readonly opened: boolean;
  readonly balance: number;
}

export type OpenAccount = Record<string, never>;
export interface Deposit { readonly amount: number }
export interface Withdraw { readonly amount: number }

export type AccountOpened = Record<string, never>;
export interface Deposited { readonly amount: number }
export interface Withdrawn { readonly amount: number }

/** Largest single deposit or withdrawal. Keeps balances far inside Number.MAX_SAFE_INTEGER. */
export const MAX_AMOUNT = 1_000_000_000;

const amountSchema = {
  type: 'object',
  properties: { amount: { type: 'integer', minimum: 1, maximum: MAX_AMOUNT } },
  required: ['amount'],
  additionalProperties: false,
} as const;

const emptySchema = { type: 'object', properties: {}, additionalProperties: false } as const;

export const account = defineActor<AccountState>({
  type: 'Account',
  initialState: () => ({ opened: false, balance: 0 }),
  commands: {
    OpenAccount: {
      schema: emptySchema,
      decide: (s) => {
        if (s.opened) reject('already-opened');
        return { type: 'AccountOpened', payload: {} };
      },
    },
    Deposit: {
      schema: amountSchema,
      decide: (s, c: Deposit) => {
        if (!s.opened) reject('account-not-opened');
        if (s.balance + c.amount > Number.MAX_SAFE_INTEGER) reject('balance-overflow', { balance: s.balance, amount: c.amount });
        return { type: 'Deposited', payload: { amount: c.amount } };
      },
    },
    Withdraw: {
      schema: amountSchema,
      decide: (s, c: Withdraw) => {
        if (!s.opened) reject('account-not-opened');
        if (s.balance < c.amount) reject('insufficient-funds', { balance: s.balance, amount: c.amount });
        return { type: 'Withdrawn', payload: { amount: c.amount } };
      },
    },
  },
  events: {
    AccountOpened: { schema: emptySchema, evolve: (s) => ({ opened: true, balance: s.balance }) },
    Deposited: { schema: amountSchema, evolve: (s, e: Deposited) => ({ opened: s.opened, balance: s.balance + e.amount }) },
    Withdrawn: { schema: amountSchema, evolve: (s, e: Withdrawn) => ({ opened: s.opened, balance: s.balance - e.amount }) },
  },
  snapshotEvery: 100,
});
