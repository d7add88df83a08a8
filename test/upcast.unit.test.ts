import { describe, expect, it } from 'vitest';
import { readSnapshot, type ContractsOf } from '../runtime/contracts/contract.ts';
import {
  addField, defineActor, InvalidDefinitionError, isTroupeError, removeField, renameField, upcast,
  type ActorConfig, type ActorDefinition, type Upcaster,
} from '../runtime/index.ts';
import { given, upcastEvent, upcastState } from '../runtime/testing/index.ts';
import { Registry } from '../runtime/contracts/registry.ts';

interface Ticket { open: boolean; subject: string; priority: string; comments: number }

const openedV1 = { type: 'object', properties: { title: { type: 'string' } }, required: ['title'], additionalProperties: false };
const openedV2 = { type: 'object', properties: { title: { type: 'string' }, priority: { type: 'string' } }, required: ['title', 'priority'], additionalProperties: false };
const openedV3 = { type: 'object', properties: { subject: { type: 'string' }, priority: { type: 'string' } }, required: ['subject', 'priority'], additionalProperties: false };

function ticket(events: Partial<ActorConfig<Ticket>['events']> = {}, extra: Partial<ActorConfig<Ticket>> = {}): ActorConfig<Ticket> {
  return {
    type: 'Ticket',
    initialState: () => ({ open: false, subject: '', priority: 'normal', comments: 0 }),
    commands: {
      OpenTicket: (_s, c: { subject: string; priority?: string }) => ({ type: 'TicketOpened', payload: { subject: c.subject, priority: c.priority ?? 'normal' } }),
    },
    events: {
      TicketOpened: {
        version: 3,
        schema: openedV3,
        schemas: { 1: openedV1, 2: openedV2 },
        upcasters: [upcast(1, 2, addField('priority', 'normal')), upcast(2, 3, renameField('title', 'subject'))],
        evolve: (s, e: { subject: string; priority: string }) => ({ ...s, open: true, subject: e.subject, priority: e.priority }),
      },
      ...events,
    } as ActorConfig<Ticket>['events'],
    ...extra,
  };
}

function definitionError(events: Upcaster[], version: number, kind: 'event' | 'state' = 'event'): InvalidDefinitionError {
  try {
    if (kind === 'event') {
      defineActor(ticket({ TicketOpened: { version, upcasters: events, evolve: (s: Ticket) => s } }));
    } else {
      defineActor(ticket({}, { stateVersion: version, stateUpcasters: events }));
    }
  } catch (e) {
    if (e instanceof InvalidDefinitionError) return e;
    throw e;
  }
  throw new Error('expected an InvalidDefinitionError');
}

describe('upcaster helpers', () => {
  it('addField adds a default when the field is absent and keeps a present one', () => {
    const up = addField('priority', 'normal');
    const ctx = { aggregateType: 'T', name: 'E', from: 1, to: 2 };
    expect(up({ title: 'x' }, ctx)).toEqual({ title: 'x', priority: 'normal' });
    expect(up({ title: 'x', priority: 'high' }, ctx)).toEqual({ title: 'x', priority: 'high' });
  });

  it('addField takes a function of the payload, and dotted paths', () => {
    const ctx = { aggregateType: 'T', name: 'E', from: 1, to: 2 };
    expect(addField('words', (p: { text: string }) => p.text.split(' ').length)({ text: 'a b c' }, ctx)).toEqual({ text: 'a b c', words: 3 });
    expect(addField('meta.source', 'import')({ meta: { at: 1 } }, ctx)).toEqual({ meta: { at: 1, source: 'import' } });
    expect(addField('meta.source', 'import')({}, ctx)).toEqual({ meta: { source: 'import' } });
  });

  it('addField gives each payload its own copy of an object default', () => {
    const up = addField('tags', []);
    const ctx = { aggregateType: 'T', name: 'E', from: 1, to: 2 };
    const a = up({}, ctx) as { tags: string[] };
    const b = up({}, ctx) as { tags: string[] };
    expect(a.tags).not.toBe(b.tags);
  });

  it('renameField moves the value, and does nothing when the field is absent', () => {
    const ctx = { aggregateType: 'T', name: 'E', from: 1, to: 2 };
    expect(renameField('title', 'subject')({ title: 'x', n: 1 }, ctx)).toEqual({ subject: 'x', n: 1 });
    expect(renameField('title', 'subject')({ n: 1 }, ctx)).toEqual({ n: 1 });
    expect(renameField('a.b', 'c')({ a: { b: 2, d: 3 } }, ctx)).toEqual({ a: { d: 3 }, c: 2 });
  });

  it('removeField drops the field, and does nothing when it is absent', () => {
    const ctx = { aggregateType: 'T', name: 'E', from: 1, to: 2 };
    expect(removeField('legacy')({ legacy: true, n: 1 }, ctx)).toEqual({ n: 1 });
    expect(removeField('legacy')({ n: 1 }, ctx)).toEqual({ n: 1 });
  });

  it('never changes the payload it is given (frozen payloads pass)', () => {
    const ctx = { aggregateType: 'T', name: 'E', from: 1, to: 2 };
    const input = Object.freeze({ title: 'x', legacy: 1, meta: Object.freeze({ a: 1 }) });
    expect(() => [addField('p', 1), renameField('title', 's'), removeField('legacy'), addField('meta.b', 2)].reduce((p, f) => f(p, ctx), input as unknown)).not.toThrow();
    expect(input).toEqual({ title: 'x', legacy: 1, meta: { a: 1 } });
  });

  it('upcast() composes several steps in order', () => {
    const u = upcast(2, 3, renameField('text', 'body'), removeField('internal'), (p: { body: string }) => ({ ...p, words: p.body.split(' ').length }));
    const fns = u.up as ((p: unknown, c: unknown) => unknown)[];
    expect(fns).toHaveLength(3);
    const out = fns.reduce((p, f) => f(p, {}), { text: 'two words', internal: false } as unknown);
    expect(out).toEqual({ body: 'two words', words: 2 });
  });
});

describe('upcaster chains are checked when the actor is defined', () => {
  it('accepts a complete chain from v1 to the current version', () => {
    const def = defineActor(ticket());
    expect(def.events.get('TicketOpened')).toMatchObject({ version: 3 });
    expect([...def.events.get('TicketOpened')!.schemas.keys()].sort()).toEqual([1, 2, 3]);
  });

  it('refuses a gap, naming the type and the missing versions', () => {
    const e = definitionError([upcast(1, 2, addField('priority', 'normal'))], 3);
    expect(e.message).toBe('actor Ticket: event TicketOpened: version 3 needs upcasters from v1, but v2→v3 is missing (a gap)');
    expect(e.data).toMatchObject({ aggregateType: 'Ticket', eventType: 'TicketOpened', missing: ['v2→v3'] });
    expect(definitionError([], 3).message).toContain('v1→v2, v2→v3 are missing (a gap)');
  });

  it('refuses an upcaster that skips a version', () => {
    const e = definitionError([upcast(1, 3, addField('priority', 'normal'))], 3);
    expect(e.message).toBe('actor Ticket: event TicketOpened: upcaster v1→v3 skips v2; upcasters go from one version to the next (a gap)');
    expect(e.data).toMatchObject({ from: 1, to: 3 });
  });

  it('refuses a duplicate, naming the versions', () => {
    const e = definitionError([upcast(1, 2, addField('a', 1)), upcast(1, 2, addField('b', 1))], 2);
    expect(e.message).toBe('actor Ticket: event TicketOpened: two upcasters from v1 (v1→v2 is declared twice); keep one');
  });

  it('refuses a step back (a cycle), naming the versions', () => {
    const e = definitionError([upcast(1, 2, addField('a', 1)), upcast(2, 1, removeField('a'))], 2);
    expect(e.message).toBe('actor Ticket: event TicketOpened: upcaster v2→v1 goes back, which makes a cycle; upcasters go from one version to the next (v2→v3)');
    expect(definitionError([upcast(2, 2, addField('a', 1))], 2).message).toContain('v2→v2 goes back, which makes a cycle');
  });

  it('refuses an upcaster past the current version, or one without functions', () => {
    expect(definitionError([upcast(1, 2, addField('a', 1))], 1).message).toBe('actor Ticket: event TicketOpened: upcaster v1→v2 goes past the current version 1; raise version to 2 or drop the upcaster');
    expect(definitionError([{ from: 1, to: 2, up: [] }], 2).message).toContain('upcaster v1→v2 needs functions');
  });

  it('refuses an old schema listed at or above the current version', () => {
    expect(() => defineActor(ticket({ TicketOpened: { version: 1, schemas: { 1: openedV1 }, evolve: (s: Ticket) => s } })))
      .toThrow('actor Ticket: event TicketOpened: schemas lists version 1, but holds the schemas of earlier versions (1 to 0); the current one goes in schema');
  });

  it('lets state upcasters start after v1 (older snapshots are rebuilt) but refuses a gap in them', () => {
    expect(() => defineActor(ticket({}, { stateVersion: 4, stateUpcasters: [upcast(2, 3, addField('a', 1)), upcast(3, 4, addField('b', 1))] }))).not.toThrow();
    const e = definitionError([upcast(1, 2, addField('a', 1)), upcast(3, 4, addField('b', 1))], 4, 'state');
    expect(e.message).toBe('actor Ticket: state: stateVersion 4: the state upcasters from v1 miss v2→v3 (a gap)');
    expect(isTroupeError(e, 'INVALID_DEFINITION')).toBe(true);
  });
});

describe('upcasting events', () => {
  const def = defineActor(ticket()) as ActorDefinition<unknown>;

  it('reads a v1 payload as v3 through every step', () => {
    expect(upcastEvent(def, 'TicketOpened', 1, { title: 'Printer on fire' })).toEqual({ subject: 'Printer on fire', priority: 'normal' });
    expect(upcastEvent(def, 'TicketOpened', 2, { title: 'x', priority: 'high' })).toEqual({ subject: 'x', priority: 'high' });
    expect(upcastEvent(def, 'TicketOpened', 3, { subject: 'x', priority: 'low' })).toEqual({ subject: 'x', priority: 'low' });
  });

  it('refuses a version newer than the definition with an UpcastError', () => {
    expect(() => upcastEvent(def, 'TicketOpened', 4, {})).toThrow(expect.objectContaining({ code: 'UPCAST_FAILED' }));
  });

  it('gives the test kit events of older versions, upcast before they are folded', () => {
    given(defineActor(ticket()), [{ type: 'TicketOpened', version: 1, payload: { title: 'Printer on fire' } }])
      .thenState({ open: true, subject: 'Printer on fire', priority: 'normal', comments: 0 });
  });

  it('checks an old given event against its schema, and its upcast against the current one', () => {
    expect(() => given(defineActor(ticket()), [{ type: 'TicketOpened', version: 1, payload: { subject: 'wrong field' } }]))
      .toThrow(/given event #1 TicketOpened v1 does not match the v1 schema: payload must have required property 'title'/);
    const broken = defineActor(ticket({
      TicketOpened: {
        version: 2, schema: openedV3, upcasters: [upcast(1, 2, addField('priority', 'normal'))],
        evolve: (s: Ticket) => s,
      },
    }));
    expect(() => given(broken, [{ type: 'TicketOpened', version: 1, payload: { title: 'x' } }]))
      .toThrow(/upcast to v2 does not match the v2 schema: payload must have required property 'subject'/);
  });
});

describe('snapshots carry a state version', () => {
  const def = defineActor(ticket({}, {
    stateVersion: 3,
    stateUpcasters: [upcast(2, 3, renameField('title', 'subject'))],
  })) as ActorDefinition<unknown>;
  const registry = new Registry();
  registry.add(def);
  const reg = registry.get('Ticket') as ContractsOf;

  it('uses a snapshot of the current state version as it is', () => {
    const snap = { sv: 3, version: 5, position: 9, state: { open: true, subject: 'x', priority: 'low', comments: 2 } };
    expect(readSnapshot(reg, snap, 't-1')).toBe(snap);
  });

  it('upcasts an older snapshot that the state upcasters reach', () => {
    const snap = { sv: 2, version: 5, position: 9, state: { open: true, title: 'x', priority: 'low', comments: 2 } };
    expect(readSnapshot(reg, snap, 't-1')).toEqual({ sv: 3, version: 5, position: 9, state: { open: true, subject: 'x', priority: 'low', comments: 2 } });
    expect(upcastState(def, 2, snap.state)).toEqual({ open: true, subject: 'x', priority: 'low', comments: 2 });
  });

  it('ignores a snapshot no upcaster reaches, or one written by a newer definition (rebuilt from the log)', () => {
    expect(readSnapshot(reg, { sv: 1, version: 5, position: 9, state: { open: true } }, 't-1')).toBeUndefined();
    expect(readSnapshot(reg, { sv: 4, version: 5, position: 9, state: { open: true } }, 't-1')).toBeUndefined();
  });

  it('ignores a snapshot whose state upcaster throws', () => {
    const throwing = defineActor(ticket({}, { stateVersion: 2, stateUpcasters: [upcast(1, 2, () => { throw new Error('boom'); })] }));
    const r = new Registry();
    r.add(throwing as ActorDefinition<unknown>);
    expect(readSnapshot(r.get('Ticket') as ContractsOf, { sv: 1, version: 1, position: 1, state: {} }, 't-1')).toBeUndefined();
  });
});
