// Durable timers without a node: ctx.schedule/cancel in decide (decide.ts), the commit record's
// timer ops through the log's codec, the firing's deterministic id and missed count
// (node/timers.ts), and the test kit's support (thenTimers, timers, fire).
import { describe, expect, it } from 'vitest';
import { defineActor, reject } from '../runtime/index.ts';
import { given, testActor, DEFAULT_TEST_NOW } from '../runtime/testing/index.ts';
import { decodeCommits, encodeBatch, encodeBatchGeneric } from '../runtime/journal/codec.ts';
import { commitTuple, COMMIT, TIMER_OP, type WireTimerSet } from '../runtime/wire.ts';
import { firedOps, missedOf, timerCommandId } from '../runtime/node/timers.ts';

const invoice = defineActor<{ reminded: number; paid: boolean; missed: number[] }>({
  type: 'Invoice',
  initialState: () => ({ reminded: 0, paid: false, missed: [] }),
  commands: {
    IssueInvoice: (_s, _c: object, ctx) => {
      ctx.schedule({ key: 'reminder', after: 15 * 60_000, command: 'RemindPayer', payload: { level: 1 } });
      ctx.schedule({ key: 'audit', every: 3_600_000, command: 'Audit' });
      return { type: 'InvoiceIssued', payload: {} };
    },
    PayInvoice: (_s, _c: object, ctx) => {
      ctx.cancel('reminder');
      return { type: 'InvoicePaid', payload: {} };
    },
    RemindPayer: (s, _c: { level: number }, ctx) => (s.paid ? reject('already-paid') : ctx.timer === null ? reject('timers-only') : { type: 'PayerReminded', payload: {} }),
    Audit: (_s, _c: object, ctx) => ({ type: 'InvoiceAudited', payload: { missed: ctx.timer?.missed ?? -1 } }),
    Bad: (_s, c: { spec: unknown }, ctx) => { ctx.schedule(c.spec as never); },
  },
  events: {
    InvoiceIssued: (s) => s,
    InvoicePaid: (s) => ({ ...s, paid: true }),
    PayerReminded: (s) => ({ ...s, reminded: s.reminded + 1 }),
    InvoiceAudited: (s, e: { missed: number }) => ({ ...s, missed: [...s.missed, e.missed] }),
  },
});

describe('ctx.schedule and ctx.cancel', () => {
  it('records the timers a command schedules and cancels, in order, with their due times', () => {
    given(invoice).when('IssueInvoice').thenTimers([
      { schedule: 'reminder', dueAt: DEFAULT_TEST_NOW + 15 * 60_000, command: 'RemindPayer', payload: { level: 1 } },
      { schedule: 'audit', dueAt: DEFAULT_TEST_NOW + 3_600_000, command: 'Audit', payload: {}, every: 3_600_000 },
    ]);
    given(invoice, [{ type: 'InvoiceIssued', payload: {} }]).when('PayInvoice').then([{ type: 'InvoicePaid', payload: {} }]).thenTimers([{ cancel: 'reminder' }]);
  });

  it('refuses a command whose timer spec is wrong, naming what is wrong', () => {
    const bad = (spec: unknown) => given(invoice).when('Bad', { spec }).thenRejects('VALIDATION').message;
    expect(bad({ key: 'k', after: 5, command: 'Nope' })).toMatch(/command must be one of the actor's commands/);
    expect(bad({ key: 'has space', after: 5, command: 'Audit' })).toMatch(/timer key must be 1-128 printable characters/);
    expect(bad({ key: 'k', command: 'Audit' })).toMatch(/give at, after or every/);
    expect(bad({ key: 'k', at: 1, after: 5, command: 'Audit' })).toMatch(/not both/);
    expect(bad({ key: 'k', every: 10, command: 'Audit' })).toMatch(/every must be an integer number of ms, at least 1000/);
    expect(bad({ key: 'k', after: 5, command: 'Audit', payload: [1] })).toMatch(/payload must be a plain object/);
  });

  it('takes at as a Date or as ms since the epoch', () => {
    const at = defineActor({
      type: 'At', initialState: () => ({}),
      commands: { Plan: (_s, c: { when: number; date: boolean }, ctx) => { ctx.schedule({ key: 'k', at: c.date ? new Date(c.when) : c.when, command: 'Plan' }); } },
      events: { Planned: (s) => s },
    });
    given(at).when('Plan', { when: 5000, date: true }).thenTimers([{ schedule: 'k', dueAt: 5000, command: 'Plan' }]);
    given(at).when('Plan', { when: 7000, date: false }).thenTimers([{ schedule: 'k', dueAt: 7000, command: 'Plan' }]);
  });
});

describe('the test kit fires timers', () => {
  it('keeps pending timers by key, fires one with ctx.timer, and consumes it', () => {
    const kit = testActor(invoice);
    kit.send('IssueInvoice');
    expect(kit.timers.map((t) => t.key)).toEqual(['reminder', 'audit']);
    // A command a caller sends has no ctx.timer.
    expect(() => kit.send('RemindPayer', { level: 1 })).toThrow(/timers-only/);
    expect(kit.fire('reminder').map((e) => e.type)).toEqual(['PayerReminded']);
    expect(kit.timers.map((t) => t.key)).toEqual(['audit']);
    expect(() => kit.fire('reminder')).toThrow(/no pending timer "reminder"/);
  });

  it('cancels by key: a paid invoice has no reminder left to fire', () => {
    const kit = testActor(invoice);
    kit.send('IssueInvoice');
    kit.send('PayInvoice');
    expect(kit.timers.map((t) => t.key)).toEqual(['audit']);
  });

  it('fires a periodic timer that missed due times once, with missed, and moves it past now', () => {
    const kit = testActor(invoice);
    kit.send('IssueInvoice');
    const first = kit.timers.find((t) => t.key === 'audit')!.dueAt;
    kit.fire('audit', { now: first + 5 * 3_600_000 + 10 });
    expect(kit.state.missed).toEqual([5]);
    expect(kit.timers.find((t) => t.key === 'audit')!.dueAt).toBe(first + 6 * 3_600_000);
    kit.fire('audit');
    expect(kit.state.missed).toEqual([5, 0]);
  });
});

describe('timer ops in the log', () => {
  const set: WireTimerSet = [TIMER_OP.SET, 'k', 1_700_000_000_123, 'Ring', { note: 'x' }, 0, 'cmd-1', 'corr-1', null];

  it('round-trips a commit with timer ops through the batch writer, and leaves commits without them as they were', () => {
    const withTimers = commitTuple('c1', 'Reminder', 'r1', 'c1', null, 1, 'test', 1, [], null, [set, [TIMER_OP.CANCEL, 'old'], [TIMER_OP.FIRED, 'f', 5, 2, 'DOMAIN_REJECTION']]);
    const plain = commitTuple('c2', 'Reminder', 'r1', 'c2', null, 1, 'test', 1, [[0, 'ReminderFired', 1, {}]], null);
    const bytes = encodeBatch('p-', [withTimers, plain]);
    expect(bytes).toEqual(encodeBatchGeneric('p-', [withTimers, plain]));
    const [a, b] = decodeCommits(bytes);
    expect(a![COMMIT.timers]).toEqual([set, [TIMER_OP.CANCEL, 'old'], [TIMER_OP.FIRED, 'f', 5, 2, 'DOMAIN_REJECTION']]);
    expect(b).toHaveLength(10);
  });

  it('derives a firing\'s commandId from the key, the due time and the scheduling command', () => {
    expect(timerCommandId('k', 1000, 'cmd-1')).toBe(timerCommandId('k', 1000, 'cmd-1'));
    expect(timerCommandId('k', 1000, 'cmd-1')).not.toBe(timerCommandId('k', 2000, 'cmd-1'));
    expect(timerCommandId('k', 1000, 'cmd-1')).not.toBe(timerCommandId('k', 1000, 'cmd-2'));
    expect(timerCommandId('k', 1000, 'cmd-1')).toMatch(/^[\x21-\x7e]{1,256}$/);
  });

  it('consumes a one-shot timer, and moves a periodic one to its first due time after the firing', () => {
    expect(firedOps(set, 0, null)).toEqual([[TIMER_OP.FIRED, 'k', set[2], 0, null]]);
    const periodic: WireTimerSet = [TIMER_OP.SET, 'p', 10_000, 'Ring', {}, 1000, 'cmd-1', 'corr-1', null];
    const missed = missedOf(10_000, 1000, 15_500);
    expect(missed).toBe(5);
    expect(firedOps(periodic, missed, 'DOMAIN_REJECTION')).toEqual([[TIMER_OP.FIRED, 'p', 10_000, 5, 'DOMAIN_REJECTION'], [TIMER_OP.SET, 'p', 16_000, 'Ring', {}, 1000, 'cmd-1', 'corr-1', null]]);
    expect(missedOf(10_000, 0, 99_000)).toBe(0);
    expect(missedOf(10_000, 1000, 10_999)).toBe(0);
  });
});
