import { describe, expect, it } from 'vitest';
import { account, entity, investigation, threat } from '../../actors/index.ts';
import { foldCommit, readCommit } from '../../runtime/contracts/contract.ts';
import type { EventEnvelope, WireCommit } from '../../runtime/journal/codec.ts';
import { addField, defineActor, eventReader, REDACTED, renameField, upcast, type ActorDefinition } from '../../runtime/index.ts';
import { isEncrypted, KeyRing } from '../../runtime/internal.ts';
import { testActor, validateCommandSchema, validateEventSchema, type TestActor } from '../../runtime/testing/index.ts';
import { Registry } from '../../runtime/contracts/registry.ts';
import { KEYS_PENDING, pendingKeys } from '../../runtime/contracts/sensitive.ts';

const examples = [account, investigation, entity, threat] as ActorDefinition<unknown>[];

/** Commands that, together, make every example actor decide every event type it declares. */
function exercise(): { def: ActorDefinition<unknown>; kit: TestActor<unknown> }[] {
  const acc = testActor(account);
  acc.send('OpenAccount', {});
  acc.send('Deposit', { amount: 100 });
  acc.send('Withdraw', { amount: 30 });

  const inv = testActor(investigation, { userId: 'sam' });
  inv.send('CreateInvestigation', { title: 'Impossible travel', severity: 'high', sourceThreatId: 'det-1' });
  inv.send('AssignInvestigation', { analystId: 'kim' });
  inv.send('ChangeInvestigationPriority', { priority: 'critical' });
  inv.send('AddInvestigationNote', { note: 'Logins from two countries within an hour' });
  inv.send('CloseInvestigation', { resolution: 'benign', summary: 'VPN exit node' });

  const ent = testActor(entity);
  ent.send('RegisterEntity', { kind: 'email', value: 'bob@example.com' });
  ent.send('EnrichEntity', { source: 'ldap', attributes: { department: 'finance', mfa: true, logins: 3 } });
  ent.send('TagEntity', { tag: 'vip' });

  const thr = testActor(threat, { userId: 'kim' });
  thr.send('DetectThreat', { signature: 'ET TROJAN', score: 95, source: 'suricata' });
  thr.send('DismissThreat', { reason: 'sinkholed' });

  return [acc, inv, ent, thr].map((kit, i) => ({ def: examples[i]!, kit: kit as TestActor<unknown> }));
}

describe('the example actors honour their event contracts', () => {
  it('decides only events that satisfy their schemas, for every declared event type', () => {
    for (const { def, kit } of exercise()) {
      const seen = new Set<string>();
      for (const e of kit.events) {
        const version = def.events.get(e.type)!.version;
        const check = validateEventSchema(`${def.type}.${e.type}`, version, e.payload);
        expect(check, `${def.type}.${e.type} ${JSON.stringify(e.payload)}`).toEqual({ valid: true, errors: [] });
        seen.add(e.type);
      }
      expect([...seen].sort(), `${def.type}: every declared event type is exercised`).toEqual([...def.events.keys()].sort());
    }
  });

  it('gives every event a schema version from 1', () => {
    for (const def of examples) for (const e of def.events.values()) expect(e.version, `${def.type}.${e.name}`).toBeGreaterThanOrEqual(1);
  });

  it('declares the free text of investigations sensitive, under the author\'s key', () => {
    expect(investigation.events.get('InvestigationNoteAdded')!.sensitive?.fields).toEqual(['note']);
    expect(investigation.events.get('InvestigationClosed')!.sensitive?.fields).toEqual(['summary']);
    const subject = investigation.events.get('InvestigationNoteAdded')!.sensitive!.subject;
    expect(subject({}, { aggregateType: 'Investigation', aggregateId: 'case-1', eventType: 'InvestigationNoteAdded', userId: 'sam' })).toBe('user:sam');
    expect(subject({}, { aggregateType: 'Investigation', aggregateId: 'case-1', eventType: 'InvestigationNoteAdded', userId: null })).toBe('Investigation:case-1');
  });
});

describe('validateEventSchema', () => {
  it('names the field and the rule of each violation', () => {
    const check = validateEventSchema('Deposited', 1, { amount: -5, extra: true });
    expect(check.valid).toBe(false);
    expect(check.errors).toEqual([
      { field: 'payload', rule: 'additionalProperties', message: 'payload must NOT have additional properties (extra)' },
      { field: 'payload/amount', rule: 'minimum', message: 'payload/amount must be >= 1' },
    ]);
  });

  it('checks a payload against the schema of an older version', () => {
    const def = defineActor({
      type: 'Memo',
      initialState: () => ({}),
      commands: { WriteMemo: { decide: () => [], schema: { type: 'object' }, version: 2, schemas: { 1: { type: 'object', required: ['text'] } } } },
      events: {
        MemoWritten: {
          version: 2,
          schema: { type: 'object', properties: { body: { type: 'string' } }, required: ['body'], additionalProperties: false },
          schemas: { 1: { type: 'object', properties: { text: { type: 'string' } }, required: ['text'], additionalProperties: false } },
          upcasters: [upcast(1, 2, renameField('text', 'body'))],
          evolve: (s) => s,
        },
      },
    }) as ActorDefinition<unknown>;
    expect(validateEventSchema('MemoWritten', 1, { text: 'hi' }, [def]).valid).toBe(true);
    expect(validateEventSchema('MemoWritten', 2, { text: 'hi' }, [def]).errors[0]).toMatchObject({ rule: 'required' });
    expect(validateEventSchema('MemoWritten', 3, { body: 'hi' }, [def]).errors).toEqual([{ field: 'payload', rule: 'version', message: 'Memo.MemoWritten has no schema for version 3 (it has v1, v2)' }]);
    expect(validateCommandSchema('WriteMemo', 1, {}, [def]).errors[0]).toMatchObject({ field: 'payload', rule: 'required' });
    expect(validateCommandSchema('Memo.WriteMemo', 2, {}, [def]).valid).toBe(true);
  });

  it('refuses an event type nobody declares, and asks for the actor type when two do', () => {
    expect(() => validateEventSchema('NothingHappened', 1, {})).toThrow(/no actor defined in this process declares the event "NothingHappened"/);
    const twin = defineActor({ type: 'Twin', initialState: () => ({}), commands: { Deposit: () => [] }, events: { Deposited: (s) => s } }) as ActorDefinition<unknown>;
    expect(() => validateEventSchema('Deposited', 1, {}, [account as ActorDefinition<unknown>, twin])).toThrow('event Deposited is declared by Account and Twin; name it as <actor type>.Deposited');
    expect(validateEventSchema('Account.Deposited', 1, { amount: 1 }, [account as ActorDefinition<unknown>, twin]).valid).toBe(true);
  });
});

// ── the compiled contracts, as the runtime uses them ────────────────────────────────────────

interface Profile { email: string | null; plan: string }
const profileV2 = defineActor<Profile>({
  type: 'Profile',
  initialState: () => ({ email: null, plan: 'free' }),
  commands: { CreateProfile: (_s, c: { email: string }) => ({ type: 'ProfileCreated', payload: { email: c.email, plan: 'free' } }) },
  events: {
    ProfileCreated: {
      version: 2,
      schema: { type: 'object', properties: { email: { type: 'string' }, plan: { type: 'string' } }, required: ['email', 'plan'], additionalProperties: false },
      upcasters: [upcast(1, 2, addField('plan', 'free'))],
      sensitive: { fields: ['email'], subject: (_p, c) => `profile:${c.aggregateId}` },
      evolve: (s, e: { email: string; plan: string }) => ({ email: e.email, plan: e.plan }),
    },
  },
});

async function setup() {
  const ring = await KeyRing.inMemory();
  const registry = new Registry();
  registry.add(account as ActorDefinition<unknown>);
  registry.add(profileV2 as ActorDefinition<unknown>);
  registry.useKeys(ring);
  return { ring, registry, profile: registry.get('Profile')!, acc: registry.get('Account')! };
}

function commit(type: string, id: string, events: [string, string, number, unknown][]): WireCommit {
  return ['cmd-1', type, id, null, null, Date.UTC(2025, 0, 1), 'test', 1, events];
}

describe('compiled event contracts', () => {
  it('passes an Account payload through untouched (the hot path: one ajv call)', async () => {
    const { acc } = await setup();
    const payload = { amount: 5 };
    expect(acc.contracts.get('Deposited')!.write(payload, 'e-1', 'a-1', null, 'c-1')).toBe(payload);
  });

  it('refuses an invalid decided event with a typed error naming field and rule', async () => {
    const { acc } = await setup();
    expect(() => acc.contracts.get('Deposited')!.write({ amount: 0 }, 'e-1', 'a-1', null, 'c-1')).toThrow(expect.objectContaining({
      code: 'SCHEMA_VIOLATION', message: 'event Account.Deposited: payload/amount must be >= 1',
      data: expect.objectContaining({ field: 'payload/amount', rule: 'minimum', eventType: 'Deposited', aggregateId: 'a-1', commandId: 'c-1' }),
    }));
  });

  it('waits for a new subject key, then encrypts the sensitive field under it', async () => {
    const { ring, profile } = await setup();
    const contract = profile.contracts.get('ProfileCreated')!;
    expect(contract.write({ email: 'ann@example.com', plan: 'free' }, 'e-1', 'p-1', null, 'c-1')).toBe(KEYS_PENDING);
    await pendingKeys();
    const stored = contract.write({ email: 'ann@example.com', plan: 'free' }, 'e-1', 'p-1', null, 'c-1') as Record<string, unknown>;
    expect(stored.plan).toBe('free');
    expect(isEncrypted(stored.email)).toBe(true);
    expect((stored.email as { $enc: string }).$enc).toBe(ring.currentKey('profile:p-1')!.kid);
    expect(JSON.stringify(stored)).not.toContain('ann@');
  });

  it('reads events back decrypted and upcast; after shredding, redacted (marker and list), never a crash', async () => {
    const { ring, registry, profile } = await setup();
    await ring.ensure('profile:p-1');
    const stored = profile.contracts.get('ProfileCreated')!.write({ email: 'ann@example.com', plan: 'pro' }, 'e-1', 'p-1', null, 'c-1');
    const c = commit('Profile', 'p-1', [['e-1', 'ProfileCreated', 2, stored]]);
    const [e] = await readCommit(profile, c, 7, registry.keys, 'throw');
    expect(e).toMatchObject({ eventId: 'e-1', version: 2, position: 7, payload: { email: 'ann@example.com', plan: 'pro' } });
    expect(e!.redacted).toBeUndefined();
    expect(await foldCommit(profile, profileV2.initialState(), c)).toEqual({ email: 'ann@example.com', plan: 'pro' });

    await ring.shred('profile:p-1');
    const [after] = await readCommit(profile, c, 7, registry.keys, 'throw');
    expect(after).toMatchObject({ payload: { email: REDACTED, plan: 'pro' }, redacted: ['email'] });
    expect(await foldCommit(profile, profileV2.initialState(), c)).toEqual({ email: REDACTED, plan: 'pro' });
  });

  it('tampering with an encrypted value or moving it to another event is detected', async () => {
    const { ring, registry, profile } = await setup();
    await ring.ensure('profile:p-1');
    const stored = profile.contracts.get('ProfileCreated')!.write({ email: 'ann@example.com', plan: 'pro' }, 'e-1', 'p-1', null, 'c-1');
    const moved = commit('Profile', 'p-1', [['e-2', 'ProfileCreated', 2, stored]]);
    expect(() => readCommit(profile, moved, 1, registry.keys, 'throw')).toThrow(/field email does not decrypt with key/);
  });
});

describe('eventReader (the consumers\' transform)', () => {
  it('upcasts old events and decrypts for a reader with the keys', async () => {
    const { ring, profile } = await setup();
    await ring.ensure('profile:p-1');
    const email = (profile.contracts.get('ProfileCreated')!.write({ email: 'ann@example.com', plan: 'free' }, 'e-1', 'p-1', null, 'c-1') as { email: unknown }).email;
    const v1: EventEnvelope = {
      eventId: 'e-1', eventType: 'ProfileCreated', aggregateType: 'Profile', aggregateId: 'p-1', sequence: 1, version: 1, timestamp: '2025-01-01T00:00:00.000Z',
      correlationId: 'c-1', causationId: 'c-1', commandId: 'c-1', userId: null, source: 'test', position: 3, payload: { email },
    };
    const read = eventReader({ actors: [profileV2 as ActorDefinition<unknown>], keys: ring });
    expect(await read(v1)).toMatchObject({ version: 2, payload: { email: 'ann@example.com', plan: 'free' } });
    expect(v1.payload).toEqual({ email }); // the input envelope is left as it was

    const blind = eventReader({ actors: [profileV2 as ActorDefinition<unknown>] });
    expect(await blind(v1)).toMatchObject({ version: 2, payload: { email: REDACTED, plan: 'free' }, redacted: ['email'] });

    // A reader that does not know the actor type still decrypts, and leaves the version as written.
    expect(await eventReader({ keys: ring })(v1)).toMatchObject({ version: 1, payload: { email: 'ann@example.com' } });
  });
});
