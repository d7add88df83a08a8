import { afterEach, describe, expect, it, vi } from 'vitest';
import { InvalidDefinitionError, addField, defineActor, isTroupeError, removeField, upcast, type ActorConfig } from '../runtime/index.ts';
import { ACTOR_DEFINITION, isActorDefinition, looksPastTense } from '../runtime/internal.ts';

interface S { n: number }

function config(overrides: Partial<ActorConfig<S>> = {}): ActorConfig<S> {
  return {
    type: 'Account',
    initialState: () => ({ n: 0 }),
    commands: { OpenAccount: () => ({ type: 'AccountOpened', payload: {} }) },
    events: { AccountOpened: (s) => s },
    ...overrides,
  };
}

function withEvent(name: string, extra: Partial<ActorConfig<S>> = {}): ActorConfig<S> {
  return config({ events: { [name]: (s: S) => s }, ...extra });
}

/** The InvalidDefinitionError that defining `c` throws; fails the test when it does not throw. */
function definitionError(c: ActorConfig<S>): InvalidDefinitionError {
  try {
    defineActor(c);
  } catch (e) {
    expect(e).toBeInstanceOf(InvalidDefinitionError);
    expect(isTroupeError(e, 'INVALID_DEFINITION')).toBe(true);
    return e as InvalidDefinitionError;
  }
  throw new Error('expected defineActor to throw InvalidDefinitionError, and it returned');
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('defineActor: event names', () => {
  it.each(['CreateAccount', 'Deposit', 'OpenAccount', 'Withdraw', 'SendPayment'])('rejects the present-tense event name %s', (name) => {
    const e = definitionError(withEvent(name));
    expect(e.message).toContain(`event ${name} should be named in the past tense`);
    expect(e.data).toMatchObject({ aggregateType: 'Account', eventType: name });
  });

  it.each(['AccountOpened', 'MoneyWithdrawn', 'PaymentSent', 'HighPriorityThreatDetected', 'Deposited', 'FeePaid', 'CardFrozen'])('accepts the past-tense event name %s', (name) => {
    expect(defineActor(withEvent(name)).events.has(name)).toBe(true);
  });

  it('only warns about a present-tense name in warn mode', () => {
    const warn = vi.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    const def = defineActor(withEvent('Deposit', { eventNameCheck: 'warn' }));
    expect(def.events.has('Deposit')).toBe(true);
    expect(warn).toHaveBeenCalledTimes(1);
    expect(warn.mock.calls[0]?.[0]).toContain('event Deposit should be named in the past tense');
    expect(warn.mock.calls[0]?.[1]).toEqual({ code: 'TROUPE_EVENT_NAME' });
  });

  it('neither warns nor throws about tense in off mode', () => {
    const warn = vi.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    expect(defineActor(withEvent('Deposit', { eventNameCheck: 'off' })).events.has('Deposit')).toBe(true);
    expect(warn).not.toHaveBeenCalled();
  });

  it('does not warn about a past-tense name in warn mode', () => {
    const warn = vi.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    defineActor(withEvent('AccountOpened', { eventNameCheck: 'warn' }));
    expect(warn).not.toHaveBeenCalled();
  });

  it('reads the tense from the last word of the name', () => {
    expect(looksPastTense('AccountOpened')).toBe(true);
    expect(looksPastTense('OpenedAccount')).toBe(false);
    expect(looksPastTense('withdrawn')).toBe(true);
    expect(looksPastTense('')).toBe(false);
  });

  it('rejects a name that is both a command and an event', () => {
    const e = definitionError(config({ commands: { AccountOpened: () => [] }, events: { AccountOpened: (s) => s } }));
    expect(e.message).toBe('actor Account: AccountOpened is both a command and an event');
  });

  it('rejects event and command names that are not identifiers', () => {
    expect(definitionError(withEvent('Account Opened')).message).toContain('event name "Account Opened" must match');
    expect(definitionError(config({ commands: { 'open.account': () => [] } })).message).toContain('command name "open.account" must match');
  });
});

describe('defineActor: the rest of the definition', () => {
  it.each([0, -1, 1.5, Number.NaN, '10'])('rejects snapshotEvery %s with a message naming it', (value) => {
    const e = definitionError(config({ snapshotEvery: value as number }));
    expect(e.message).toBe(`actor Account: snapshotEvery must be a positive integer, got ${String(value)}`);
  });

  it('rejects a stateVersion or event version that is not a positive integer', () => {
    expect(definitionError(config({ stateVersion: 0 })).message).toBe('actor Account: stateVersion must be a positive integer, got 0');
    const e = definitionError(config({ events: { AccountOpened: { evolve: (s: S) => s, version: -2 } } }));
    expect(e.message).toBe('actor Account: events.AccountOpened.version must be a positive integer, got -2');
  });

  it.each(['', '1Account', 'Bank Account', 'a'.repeat(65)])('rejects the type name %j', (type) => {
    expect(definitionError(config({ type })).message).toContain('actor type name must match');
  });

  it('requires initialState to be a function', () => {
    const e = definitionError(config({ initialState: { n: 0 } as unknown as () => S }));
    expect(e.message).toBe('actor Account: initialState must be a function returning the state of a new actor');
  });

  it('requires at least one command and one event', () => {
    expect(definitionError(config({ commands: {} })).message).toBe('actor Account: declare at least one command');
    expect(definitionError(config({ events: {} })).message).toBe('actor Account: declare at least one event');
  });

  it('requires a decide for every command and an evolve for every event', () => {
    expect(definitionError(config({ commands: { OpenAccount: { schema: {} } as never } })).message).toBe('actor Account: command OpenAccount needs a decide function');
    expect(definitionError(config({ events: { AccountOpened: { schema: {} } as never } })).message).toBe('actor Account: event AccountOpened needs an evolve function');
  });

  it('fills defaults and keeps schemas and versions', () => {
    const schema = { type: 'object', additionalProperties: false };
    const def = defineActor(config({
      commands: { OpenAccount: { decide: () => [], schema } },
      events: {
        AccountOpened: (s) => s,
        AccountClosed: { evolve: (s: S) => s, schema, version: 3, upcasters: [upcast(1, 2, addField('reason', null)), upcast(2, 3, removeField('legacy'))] },
      },
    }));
    expect(def.snapshotEvery).toBe(100);
    expect(def.stateVersion).toBe(1);
    expect(def.commands.get('OpenAccount')?.schema).toBe(schema);
    expect(def.events.get('AccountOpened')).toMatchObject({ name: 'AccountOpened', schema: undefined, version: 1 });
    expect(def.events.get('AccountClosed')).toMatchObject({ schema, version: 3 });
  });

  it('returns a frozen definition that isActorDefinition recognises', () => {
    const def = defineActor(config({ snapshotEvery: 7 }));
    expect(Object.isFrozen(def)).toBe(true);
    expect(def[ACTOR_DEFINITION]).toBe(true);
    expect(def.snapshotEvery).toBe(7);
    expect(isActorDefinition(def)).toBe(true);
    expect(isActorDefinition({ type: 'Account' })).toBe(false);
    expect(isActorDefinition(null)).toBe(false);
  });
});
