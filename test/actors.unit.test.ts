import { createHash } from 'node:crypto';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { account, actorModules, entity, investigation, threat } from '../actors/index.ts';
import type { ActorDefinition, EventDraft } from '../runtime/index.ts';
import { given, testActor } from '../runtime/testing/index.ts';

const definitions = [account, investigation, entity, threat] as ActorDefinition<unknown>[];
const ajv = new Ajv({ strict: true, allErrors: true });

function commandSchema<S>(def: ActorDefinition<S>, command: string) {
  const schema = def.commands.get(command)?.schema;
  if (schema === undefined) throw new Error(`${def.type}.${command} has no schema`);
  return ajv.compile(schema);
}

/** Every event the kit recorded satisfies its declared schema (the runtime checks before append). */
function expectEventsMatchSchemas<S>(def: ActorDefinition<S>, events: readonly EventDraft[]): void {
  for (const e of events) {
    const validate = ajv.compile(def.events.get(e.type)!.schema!);
    expect(validate(e.payload), `${e.type} ${JSON.stringify(e.payload)}: ${ajv.errorsText(validate.errors)}`).toBe(true);
  }
}

describe('actor modules', () => {
  it('lists one importable module path per example actor', async () => {
    expect(actorModules).toHaveLength(4);
    const types: string[] = [];
    for (const path of actorModules) {
      const mod = (await import(path)) as Record<string, unknown>;
      for (const v of Object.values(mod)) if (definitions.includes(v as ActorDefinition<unknown>)) types.push((v as ActorDefinition<unknown>).type);
    }
    expect(types.sort()).toEqual(['Account', 'Entity', 'Investigation', 'Threat']);
  });

  it('gives every command and event a strict JSON Schema that closes the payload', () => {
    for (const def of definitions) {
      for (const spec of [...def.commands.values(), ...def.events.values()]) {
        expect(spec.schema, `${def.type}.${spec.name}`).toMatchObject({ type: 'object', additionalProperties: false });
        expect(() => ajv.compile(spec.schema!), `${def.type}.${spec.name}`).not.toThrow();
      }
    }
  });

  it('snapshots every actor type at a positive interval, Account every 100 events', () => {
    expect(account.snapshotEvery).toBe(100);
    for (const def of definitions) expect(def.snapshotEvery).toBeGreaterThan(0);
  });
});

describe('Account', () => {
  const opened: EventDraft[] = [{ type: 'AccountOpened', payload: {} }];
  const funded: EventDraft[] = [...opened, { type: 'Deposited', payload: { amount: 100 } }];

  it('opens a new account', () => {
    given(account).when('OpenAccount', {}).then([{ type: 'AccountOpened', payload: {} }]).thenState({ opened: true, balance: 0 });
  });

  it('rejects opening an account twice', () => {
    given(account, opened).when('OpenAccount', {}).thenRejects('already-opened');
  });

  it('adds a deposit to the balance', () => {
    given(account, funded).when('Deposit', { amount: 7 }).then([{ type: 'Deposited', payload: { amount: 7 } }]).thenState({ opened: true, balance: 107 });
  });

  it('rejects deposits and withdrawals on an account that is not opened', () => {
    given(account).when('Deposit', { amount: 7 }).thenRejects('account-not-opened');
    given(account).when('Withdraw', { amount: 7 }).thenRejects('account-not-opened');
  });

  it('withdraws up to the whole balance', () => {
    given(account, funded).when('Withdraw', { amount: 100 }).then([{ type: 'Withdrawn', payload: { amount: 100 } }]).thenState({ opened: true, balance: 0 });
  });

  it('rejects a withdrawal larger than the balance with insufficient-funds and the numbers', () => {
    given(account, funded).when('Withdraw', { amount: 101 }).thenRejects({ reason: 'insufficient-funds', data: { balance: 100, amount: 101 } });
  });

  it('rejects a deposit that would take the balance past Number.MAX_SAFE_INTEGER', () => {
    const rich = [...opened, { type: 'Deposited', payload: { amount: Number.MAX_SAFE_INTEGER - 5 } }];
    given(account, rich).when('Deposit', { amount: 6 }).thenRejects('balance-overflow');
    given(account, rich).when('Deposit', { amount: 5 }).then([{ type: 'Deposited', payload: { amount: 5 } }]);
  });

  it('accepts only positive integer amounts and no other fields', () => {
    for (const command of ['Deposit', 'Withdraw']) {
      const validate = commandSchema(account, command);
      expect(validate({ amount: 1 })).toBe(true);
      for (const bad of [{}, { amount: 0 }, { amount: -1 }, { amount: 1.5 }, { amount: '5' }, { amount: 5, note: 'x' }]) {
        expect(validate(bad), `${command} ${JSON.stringify(bad)}`).toBe(false);
      }
    }
    expect(commandSchema(account, 'OpenAccount')({ owner: 'x' })).toBe(false);
  });

  it('rebuilds the same balance from a snapshot and from the whole log after more than snapshotEvery events', () => {
    const kit = testActor(account);
    kit.send('OpenAccount', {});
    let balance = 0;
    let rejected = 0;
    for (let i = 0; i < 250; i++) {
      const amount = 1 + (i * 37) % 100;
      if (i % 3 === 2) {
        try {
          kit.send('Withdraw', { amount });
          balance -= amount;
        } catch {
          rejected++;
        }
      } else {
        kit.send('Deposit', { amount });
        balance += amount;
      }
    }
    expect(kit.state).toEqual({ opened: true, balance });
    expect(kit.snapshotVersion).toBeGreaterThanOrEqual(account.snapshotEvery);
    expect(kit.events).toHaveLength(251 - rejected);
    expectEventsMatchSchemas(account, kit.events);

    const restarted = kit.restart();
    expect(restarted.state).toEqual({ opened: true, balance });
    kit.restart({ snapshotAt: 137 });
    restarted.send('Deposit', { amount: 1 });
    expect(restarted.state.balance).toBe(balance + 1);
    expect(restarted.events.at(-1)?.sequence).toBe(252 - rejected);
  });
});

describe('Investigation', () => {
  const created: EventDraft[] = [{
    type: 'InvestigationCreated', payload: { title: 'Beaconing from host-7', severity: 'high', sourceThreatId: null, createdBy: null },
  }];
  const assigned: EventDraft[] = [...created, { type: 'InvestigationAssigned', payload: { analystId: 'ana', previousAnalystId: null } }];
  const closed: EventDraft[] = [...assigned, { type: 'InvestigationClosed', payload: { resolution: 'resolved', summary: null, closedBy: null } }];
  const openState = {
    status: 'open', title: 'Beaconing from host-7', severity: 'high', priority: 'high', sourceThreatId: null, assignee: null, noteCount: 0, resolution: null,
  } as const;

  it('creates an investigation from a threat, recording who created it', () => {
    given(investigation).when('CreateInvestigation', { title: 'Beaconing from host-7', severity: 'high', sourceThreatId: 'threat-9' }, { userId: 'ana' })
      .then([{ type: 'InvestigationCreated', payload: { title: 'Beaconing from host-7', severity: 'high', sourceThreatId: 'threat-9', createdBy: 'ana' } }])
      .thenState({ ...openState, sourceThreatId: 'threat-9' });
  });

  it('rejects creating an investigation twice', () => {
    given(investigation, created).when('CreateInvestigation', { title: 'Again', severity: 'low' }).thenRejects('investigation-already-created');
  });

  it('assigns an analyst and records the previous one', () => {
    given(investigation, created).when('AssignInvestigation', { analystId: 'ana' })
      .then([{ type: 'InvestigationAssigned', payload: { analystId: 'ana', previousAnalystId: null } }])
      .thenState({ ...openState, assignee: 'ana' });
    given(investigation, assigned).when('AssignInvestigation', { analystId: 'bo' })
      .then([{ type: 'InvestigationAssigned', payload: { analystId: 'bo', previousAnalystId: 'ana' } }]);
  });

  it('emits nothing when assigning the analyst already assigned', () => {
    given(investigation, assigned).when('AssignInvestigation', { analystId: 'ana' }).then([]);
  });

  it('rejects every command but create before the investigation is created', () => {
    given(investigation).when('AssignInvestigation', { analystId: 'ana' }).thenRejects('investigation-not-created');
    given(investigation).when('ChangeInvestigationPriority', { priority: 'low' }).thenRejects('investigation-not-created');
    given(investigation).when('AddInvestigationNote', { note: 'hm' }).thenRejects('investigation-not-created');
    given(investigation).when('CloseInvestigation', { resolution: 'resolved' }).thenRejects('investigation-not-created');
  });

  it('rejects assigning, re-prioritising and annotating a closed investigation', () => {
    given(investigation, closed).when('AssignInvestigation', { analystId: 'bo' }).thenRejects('investigation-closed');
    given(investigation, closed).when('ChangeInvestigationPriority', { priority: 'low' }).thenRejects('investigation-closed');
    given(investigation, closed).when('AddInvestigationNote', { note: 'late' }).thenRejects('investigation-closed');
  });

  it('changes the priority and emits nothing when it is unchanged', () => {
    given(investigation, created).when('ChangeInvestigationPriority', { priority: 'critical' })
      .then([{ type: 'InvestigationPriorityChanged', payload: { priority: 'critical', previousPriority: 'high' } }])
      .thenState({ ...openState, priority: 'critical' });
    given(investigation, created).when('ChangeInvestigationPriority', { priority: 'high' }).then([]);
  });

  it('adds a note with its author and counts notes in the state', () => {
    given(investigation, created).when('AddInvestigationNote', { note: 'C2 at 203.0.113.9' }, { userId: 'bo' })
      .then([{ type: 'InvestigationNoteAdded', payload: { note: 'C2 at 203.0.113.9', authorId: 'bo' } }])
      .thenState({ ...openState, noteCount: 1 });
  });

  it('closes an open investigation with a resolution', () => {
    given(investigation, assigned).when('CloseInvestigation', { resolution: 'false-positive', summary: 'Backup job' }, { userId: 'ana' })
      .then([{ type: 'InvestigationClosed', payload: { resolution: 'false-positive', summary: 'Backup job', closedBy: 'ana' } }])
      .thenState({ ...openState, assignee: 'ana', status: 'closed', resolution: 'false-positive' });
  });

  it('rejects closing an investigation twice', () => {
    given(investigation, closed).when('CloseInvestigation', { resolution: 'duplicate' }).thenRejects({ reason: 'investigation-already-closed', data: { resolution: 'resolved' } });
  });

  it('accepts only known severities, resolutions and bounded strings', () => {
    const create = commandSchema(investigation, 'CreateInvestigation');
    expect(create({ title: 'T', severity: 'medium' })).toBe(true);
    expect(create({ title: 'T', severity: 'urgent' })).toBe(false);
    expect(create({ title: '', severity: 'low' })).toBe(false);
    expect(create({ title: 'x'.repeat(201), severity: 'low' })).toBe(false);
    expect(create({ severity: 'low' })).toBe(false);
    expect(create({ title: 'T', severity: 'low', owner: 'x' })).toBe(false);
    expect(commandSchema(investigation, 'CloseInvestigation')({ resolution: 'done' })).toBe(false);
    expect(commandSchema(investigation, 'ChangeInvestigationPriority')({ priority: 'p1' })).toBe(false);
    expect(commandSchema(investigation, 'AssignInvestigation')({ analystId: '' })).toBe(false);
    expect(commandSchema(investigation, 'AddInvestigationNote')({ note: 'x'.repeat(10_001) })).toBe(false);
  });

  it('rebuilds the same case from a snapshot and from the whole log after more than snapshotEvery events', () => {
    const kit = testActor(investigation, { userId: 'ana' });
    kit.send('CreateInvestigation', { title: 'Lateral movement', severity: 'medium' });
    const priorities = ['low', 'medium', 'high', 'critical'] as const;
    for (let i = 0; i < 120; i++) {
      kit.send('AddInvestigationNote', { note: `note ${i}` });
      if (i % 10 === 0) kit.send('AssignInvestigation', { analystId: `analyst-${i % 3}` });
      if (i % 7 === 0) kit.send('ChangeInvestigationPriority', { priority: priorities[i % 4]! });
    }
    kit.send('CloseInvestigation', { resolution: 'resolved', summary: 'Contained' });
    expect(kit.version).toBeGreaterThan(2 * investigation.snapshotEvery);
    expect(kit.state).toMatchObject({ status: 'closed', noteCount: 120, resolution: 'resolved' });
    expectEventsMatchSchemas(investigation, kit.events);

    const restarted = kit.restart();
    expect(restarted.state).toEqual(kit.state);
    kit.restart({ snapshotAt: 1 });
    expect(() => restarted.send('AddInvestigationNote', { note: 'after' })).toThrow('investigation-closed');
  });
});

describe('Entity', () => {
  const ip: EventDraft[] = [{ type: 'EntityRegistered', payload: { kind: 'ip', value: '203.0.113.9', valueSha256: sha256('203.0.113.9'), pseudonymized: false } }];

  function sha256(value: string): string {
    return createHash('sha256').update(value).digest('hex');
  }

  it('registers an indicator with its value in the clear', () => {
    given(entity).when('RegisterEntity', { kind: 'ip', value: '203.0.113.9' })
      .then(ip)
      .thenState({ registered: true, kind: 'ip', value: '203.0.113.9', valueSha256: sha256('203.0.113.9'), pseudonymized: false, attributes: {}, sources: [], tags: [] });
  });

  it('stores a user account only as the SHA-256 of its name, never in the clear', () => {
    const scenario = given(entity).when('RegisterEntity', { kind: 'user', value: 'alice.martin' });
    scenario.then([{ type: 'EntityRegistered', payload: { kind: 'user', value: null, valueSha256: sha256('alice.martin'), pseudonymized: true } }]);
    scenario.thenState({ registered: true, kind: 'user', value: null, valueSha256: sha256('alice.martin'), pseudonymized: true, attributes: {}, sources: [], tags: [] });
    expect(JSON.stringify(scenario.events)).not.toContain('alice');
  });

  it('pseudonymizes email addresses as well', () => {
    given(entity).when('RegisterEntity', { kind: 'email', value: 'bob@example.com' })
      .then([{ type: 'EntityRegistered', payload: { kind: 'email', value: null, valueSha256: sha256('bob@example.com'), pseudonymized: true } }]);
  });

  it('rejects registering an entity twice', () => {
    given(entity, ip).when('RegisterEntity', { kind: 'ip', value: '198.51.100.1' }).thenRejects('entity-already-registered');
  });

  it('merges enrichment attributes, later sources overriding earlier ones', () => {
    const enriched = [...ip, { type: 'EntityEnriched', payload: { source: 'geoip', attributes: { country: 'NL', asn: 64500 } } }];
    given(entity, enriched).when('EnrichEntity', { source: 'threat-intel', attributes: { malicious: true, country: 'DE' } })
      .then([{ type: 'EntityEnriched', payload: { source: 'threat-intel', attributes: { malicious: true, country: 'DE' } } }])
      .thenState({
        registered: true, kind: 'ip', value: '203.0.113.9', valueSha256: sha256('203.0.113.9'), pseudonymized: false,
        attributes: { country: 'DE', asn: 64500, malicious: true }, sources: ['geoip', 'threat-intel'], tags: [],
      });
  });

  it('tags an entity once and emits nothing for a tag it already has', () => {
    given(entity, ip).when('TagEntity', { tag: 'c2' }).then([{ type: 'EntityTagged', payload: { tag: 'c2' } }]);
    given(entity, [...ip, { type: 'EntityTagged', payload: { tag: 'c2' } }]).when('TagEntity', { tag: 'c2' }).then([]);
  });

  it('rejects a tag past MAX_TAGS', () => {
    const tagged = [...ip, ...Array.from({ length: 64 }, (_, i) => ({ type: 'EntityTagged', payload: { tag: `t${i}` } }))];
    given(entity, tagged).when('TagEntity', { tag: 'one-more' }).thenRejects('too-many-tags');
  });

  it('rejects enriching or tagging an entity that is not registered', () => {
    given(entity).when('EnrichEntity', { source: 'geoip', attributes: { country: 'NL' } }).thenRejects('entity-not-registered');
    given(entity).when('TagEntity', { tag: 'c2' }).thenRejects('entity-not-registered');
  });

  it('accepts only known kinds, scalar attributes and lower-case tags', () => {
    const register = commandSchema(entity, 'RegisterEntity');
    expect(register({ kind: 'domain', value: 'example.com' })).toBe(true);
    expect(register({ kind: 'phone', value: '555' })).toBe(false);
    expect(register({ kind: 'ip', value: '' })).toBe(false);
    const enrich = commandSchema(entity, 'EnrichEntity');
    expect(enrich({ source: 'geoip', attributes: { a: 'x', b: 1, c: false } })).toBe(true);
    expect(enrich({ source: 'geoip', attributes: {} })).toBe(false);
    expect(enrich({ source: 'geoip', attributes: { nested: { x: 1 } } })).toBe(false);
    expect(enrich({ source: 'geoip', attributes: { '__proto__': 'x' } })).toBe(false);
    expect(enrich({ source: 'geoip', attributes: { a: null } })).toBe(false);
    const tag = commandSchema(entity, 'TagEntity');
    expect(tag({ tag: 'apt:29' })).toBe(true);
    expect(tag({ tag: 'Has Space' })).toBe(false);
  });

  it('refuses an event that carries a pseudonymized value in the clear', () => {
    const validate = ajv.compile(entity.events.get('EntityRegistered')!.schema!);
    expect(validate({ kind: 'user', value: 'alice', valueSha256: sha256('alice'), pseudonymized: true })).toBe(false);
  });

  it('survives a restart with attributes, sources and tags', () => {
    const kit = testActor(entity);
    kit.send('RegisterEntity', { kind: 'user', value: 'alice.martin' });
    for (let i = 0; i < 30; i++) kit.send('EnrichEntity', { source: `src-${i % 4}`, attributes: { [`k${i % 5}`]: i, seen: true } });
    kit.send('TagEntity', { tag: 'vip' });
    expectEventsMatchSchemas(entity, kit.events);
    expect(kit.restart().state).toEqual(kit.state);
  });
});

describe('Threat', () => {
  const detected: EventDraft[] = [{ type: 'ThreatDetected', payload: { signature: 'ET TROJAN beacon', score: 40, source: 'ids' } }];

  it('detects a threat below the high-priority score with one event', () => {
    given(threat).when('DetectThreat', { signature: 'ET TROJAN beacon', score: 79, source: 'ids' })
      .then([{ type: 'ThreatDetected', payload: { signature: 'ET TROJAN beacon', score: 79, source: 'ids' } }])
      .thenState({ status: 'detected', signature: 'ET TROJAN beacon', score: 79, source: 'ids', highPriority: false, dismissReason: null });
  });

  it('also emits HighPriorityThreatDetected when the score is 80 or more', () => {
    given(threat).when('DetectThreat', { signature: 'ransomware', score: 80, source: 'edr' })
      .then([
        { type: 'ThreatDetected', payload: { signature: 'ransomware', score: 80, source: 'edr' } },
        { type: 'HighPriorityThreatDetected', payload: { signature: 'ransomware', score: 80 } },
      ])
      .thenState({ status: 'detected', signature: 'ransomware', score: 80, source: 'edr', highPriority: true, dismissReason: null });
  });

  it('rejects detecting the same threat twice', () => {
    given(threat, detected).when('DetectThreat', { signature: 'x', score: 1, source: 'ids' }).thenRejects('threat-already-detected');
  });

  it('dismisses a detected threat, recording who did', () => {
    given(threat, detected).when('DismissThreat', { reason: 'known scanner' }, { userId: 'ana' })
      .then([{ type: 'ThreatDismissed', payload: { reason: 'known scanner', dismissedBy: 'ana' } }])
      .thenState({ status: 'dismissed', signature: 'ET TROJAN beacon', score: 40, source: 'ids', highPriority: false, dismissReason: 'known scanner' });
  });

  it('rejects dismissing a threat that is not detected or already dismissed', () => {
    given(threat).when('DismissThreat', { reason: 'x' }).thenRejects('threat-not-detected');
    given(threat, [...detected, { type: 'ThreatDismissed', payload: { reason: 'x', dismissedBy: null } }])
      .when('DismissThreat', { reason: 'y' }).thenRejects('threat-already-dismissed');
  });

  it('accepts only integer scores from 0 to 100', () => {
    const validate = commandSchema(threat, 'DetectThreat');
    expect(validate({ signature: 's', score: 0, source: 'ids' })).toBe(true);
    expect(validate({ signature: 's', score: 100, source: 'ids' })).toBe(true);
    for (const score of [-1, 101, 50.5, '50']) expect(validate({ signature: 's', score, source: 'ids' }), String(score)).toBe(false);
    expect(validate({ signature: 's', score: 5 })).toBe(false);
  });

  it('survives a restart after a high-priority detection and a dismissal', () => {
    const kit = testActor(threat);
    kit.send('DetectThreat', { signature: 'ransomware', score: 95, source: 'edr' });
    kit.send('DismissThreat', { reason: 'red team exercise' });
    expectEventsMatchSchemas(threat, kit.events);
    expect(kit.restart().state).toMatchObject({ status: 'dismissed', highPriority: true });
  });
});
