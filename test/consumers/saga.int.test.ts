// Workflows and sagas against a real nats-server: HighPriorityThreatDetected opens an
// Investigation (caused by the event, in its correlation, once), and the containThreat saga
// runs across Investigation and Entity, compensates when a step is refused, and resumes
// after a retryable failure without redoing finished steps.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { actorModules } from '../../actors/index.ts';
import { containThreat, HIGH_PRIORITY_TAG, investigationIdFor, threatInvestigations, THREAT_INVESTIGATIONS } from '../../actors/workflows.ts';
import { TroupeClient } from '../../runtime/remote/client.ts';
import type { Consumer } from '../../runtime/consumers/consume.ts';
import type { CommandResult } from '../../runtime/envelope.ts';
import { JournalUnavailableError } from '../../runtime/errors.ts';
import { commandIdFor, saga, type CommandSender, type Saga } from '../../runtime/consumers/saga.ts';
import { Troupe, type Command } from '../../runtime/node/system.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { freshStream } from '../helpers/troupe.ts';

describe('workflows and sagas', () => {
  const nats = useNatsServer();
  const { stream, subjectPrefix } = freshStream('SAGA');
  let node: Troupe;
  let client: TroupeClient;
  const stops: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    node = await Troupe.start({ actors: [...actorModules], servers: nats.url, dataDir: tempDir(), workers: 1, shards: 4, stream, subjectPrefix });
    client = await TroupeClient.connect({ servers: nats.url, subjectPrefix, timeoutMs: 10_000 });
  });
  afterEach(async () => {
    for (const s of stops.splice(0)) await s();
  });
  afterAll(async () => {
    await client?.close();
    await node?.stop();
  });

  const common = () => ({ servers: nats.url, stream, subjectPrefix, dataDir: tempDir(), retry: { initialDelayMs: 50, maxDelayMs: 200 } });

  async function detect(threatId: string, signature: string, score: number, correlationId?: string): Promise<string> {
    const r = await node.send('Threat', threatId, 'DetectThreat', { signature, score, source: 'ids' }, correlationId === undefined ? {} : { correlationId });
    const high = r.events.find((e) => e.eventType === 'HighPriorityThreatDetected');
    return high?.eventId ?? '';
  }

  /** A sender that counts commands by type and can fail the first send of a type after it went through. */
  function countingSender(target: CommandSender, loseReplyOf?: string): CommandSender & { sent: Command[] } {
    const sent: Command[] = [];
    let lost = false;
    return {
      sent,
      async send(aggregateType: string, aggregateId: string, command: Command): Promise<CommandResult> {
        sent.push(command);
        const r = await target.send(aggregateType, aggregateId, command);
        if (command.type === loseReplyOf && !lost) {
          lost = true;
          throw new JournalUnavailableError('the reply was lost on the way back');
        }
        return r;
      },
    };
  }

  it('opens an Investigation for HighPriorityThreatDetected, caused by the event and in its correlation', async () => {
    const c: Consumer = await threatInvestigations({ ...common(), sender: client });
    stops.push(() => c.stop());
    const eventId = await detect('thr-1', 'beacon-10.0.0.7', 91, 'incident-7');
    await detect('thr-low', 'port-scan', 40);
    await c.caughtUp();

    const history = await node.history('Investigation', investigationIdFor('thr-1'));
    expect(history).toHaveLength(1);
    expect(history[0]).toMatchObject({
      eventType: 'InvestigationCreated',
      payload: { title: 'High-priority threat beacon-10.0.0.7 (score 91)', severity: 'high', sourceThreatId: 'thr-1' },
      correlationId: 'incident-7',
      commandCausationId: eventId,
      commandId: commandIdFor(THREAT_INVESTIGATIONS, eventId, 'open-investigation'),
    });
    // A threat below the high-priority score opens nothing.
    expect((await node.query('Investigation', investigationIdFor('thr-low'))).version).toBe(0);
  });

  it('opens one investigation even when the event is handled again after the command went through', async () => {
    const sender = countingSender(node, 'CreateInvestigation');
    const c = await threatInvestigations({ ...common(), name: 'threat-investigations-again', sender });
    stops.push(() => c.stop());
    const eventId = await detect('thr-2', 'dns-tunnel', 99);
    await c.caughtUp();
    // Sent twice (the first reply was lost, the event was retried), decided once.
    const mine = sender.sent.filter((s) => s.causationId === eventId);
    expect(mine.map((s) => s.commandId)).toEqual([commandIdFor('threat-investigations-again', eventId, 'open-investigation'), commandIdFor('threat-investigations-again', eventId, 'open-investigation')]);
    const history = await node.history('Investigation', investigationIdFor('thr-2'));
    expect(history.map((e) => [e.eventType, (e.payload as { severity?: string }).severity])).toEqual([['InvestigationCreated', 'critical']]);
  });

  it('runs the saga\'s steps across Investigation and Entity and records it completed', async () => {
    await node.send('Entity', 'evil.example.com', 'RegisterEntity', { kind: 'domain', value: 'evil.example.com' });
    const s: Saga = await saga(containThreat, { ...common(), sender: node });
    stops.push(() => s.stop());
    const eventId = await detect('thr-3', 'evil.example.com', 97);
    await s.consumer.caughtUp();

    expect(s.status(eventId)).toMatchObject({ status: 'completed', completed: ['open-investigation', 'note-indicator', 'tag-indicator'], compensated: [], failure: null });
    const inv = await node.history('Investigation', investigationIdFor('thr-3'));
    expect(inv.map((e) => e.eventType)).toEqual(['InvestigationCreated', 'InvestigationNoteAdded']);
    expect(inv.every((e) => e.commandCausationId === eventId)).toBe(true);
    expect((await node.query<{ tags: string[] }>('Entity', 'evil.example.com')).state.tags).toEqual([HIGH_PRIORITY_TAG]);
  });

  it('compensates the steps done so far, last first, when a step is refused', async () => {
    const s = await saga(containThreat, { ...common(), sender: node });
    stops.push(() => s.stop());
    const eventId = await detect('thr-4', 'unknown.example.net', 93);
    await s.consumer.caughtUp();

    expect(s.status(eventId)).toMatchObject({
      status: 'compensated',
      completed: ['open-investigation', 'note-indicator'],
      compensated: ['note-indicator', 'open-investigation'],
      failure: { step: 'tag-indicator', reason: 'DOMAIN_REJECTION' },
    });
    const inv = await node.history('Investigation', investigationIdFor('thr-4'));
    expect(inv.map((e) => [e.eventType, (e.payload as { note?: string; resolution?: string }).note ?? (e.payload as { resolution?: string }).resolution ?? null])).toEqual([
      ['InvestigationCreated', null],
      ['InvestigationNoteAdded', 'Indicator unknown.example.net flagged by threat thr-4'],
      ['InvestigationNoteAdded', 'Indicator unknown.example.net link withdrawn'],
      ['InvestigationClosed', 'false-positive'],
    ]);
    // The saga ended: its event is handled, nothing went to the dead-letter queue.
    expect((await s.consumer.deadLetters.stats()).byConsumer['contain-threat']).toBeUndefined();
  });

  it('resumes after a retryable failure without sending the finished steps again', async () => {
    await node.send('Entity', 'c2.example.org', 'RegisterEntity', { kind: 'domain', value: 'c2.example.org' });
    const sender = countingSender(node, 'TagEntity');
    const s = await saga(containThreat, { ...common(), sender });
    stops.push(() => s.stop());
    const eventId = await detect('thr-5', 'c2.example.org', 88);
    await s.consumer.caughtUp();

    expect(s.status(eventId)?.status).toBe('completed');
    expect(sender.sent.map((c) => c.type)).toEqual(['CreateInvestigation', 'AddInvestigationNote', 'TagEntity', 'TagEntity']);
    expect((await node.history('Investigation', investigationIdFor('thr-5'))).map((e) => e.eventType)).toEqual(['InvestigationCreated', 'InvestigationNoteAdded']);
    expect(s.consumer.stats()).toMatchObject({ failures: 1, handled: 1 });
  });
});
