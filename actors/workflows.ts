/**
 * Workflows between the example actors.
 *
 * - `threatInvestigations`: every HighPriorityThreatDetected opens an Investigation
 *   (`inv-<threatId>`), severity from the score. The command's causationId is the threat
 *   event's id and its correlationId the threat's, so the investigation's events trace back
 *   to the detection; its commandId is derived from the event, so a redelivered detection
 *   never opens a second investigation.
 *
 * - `containThreat`: a saga over two actor types for the same event. It opens the
 *   investigation, notes the indicator in it, then tags the indicator Entity (whose id is the
 *   threat's signature). If the tag is refused (the entity is not registered), the note is
 *   withdrawn and the investigation closed as a false positive: the steps done so far are
 *   compensated, last first.
 */
import {
  saga, workflow, type CommandSender, type Consumer, type EventEnvelope, type Saga, type SagaDefinition, type SagaOptions, type WorkflowOptions,
} from '../runtime/index.ts';
import type { HighPriorityThreatDetected } from './threat.ts';
import type { Severity } from './investigation.ts';

export const THREAT_INVESTIGATIONS = 'threat-investigations';
export const CONTAIN_THREAT = 'contain-threat';
export const HIGH_PRIORITY_TAG = 'high-priority-threat';

/** The investigation opened for a threat. */
export function investigationIdFor(threatId: string): string {
  return `inv-${threatId}`;
}

export function severityFor(score: number): Severity {
  return score >= 95 ? 'critical' : 'high';
}

function createInvestigation(e: EventEnvelope<HighPriorityThreatDetected>) {
  return {
    title: `High-priority threat ${e.payload.signature} (score ${e.payload.score})`.slice(0, 200),
    severity: severityFor(e.payload.score),
    sourceThreatId: e.aggregateId,
  };
}

/** HighPriorityThreatDetected → CreateInvestigation. */
export function threatInvestigations(options: Omit<WorkflowOptions, 'name' | 'on'> & { name?: string; sender: CommandSender }): Promise<Consumer> {
  return workflow({
    ...options,
    name: options.name ?? THREAT_INVESTIGATIONS,
    on: {
      HighPriorityThreatDetected: async (event, commands) => {
        const e = event as EventEnvelope<HighPriorityThreatDetected>;
        await commands.send('Investigation', investigationIdFor(e.aggregateId), 'CreateInvestigation', createInvestigation(e), 'open-investigation');
      },
    },
  });
}

/** The saga: open the investigation, note the indicator, tag the indicator entity; undo on refusal. */
export const containThreat: SagaDefinition = {
  name: CONTAIN_THREAT,
  startOn: 'HighPriorityThreatDetected',
  steps: [
    {
      name: 'open-investigation',
      run: async (s) => {
        const e = s.event as EventEnvelope<HighPriorityThreatDetected>;
        const r = await s.send('Investigation', investigationIdFor(e.aggregateId), 'CreateInvestigation', createInvestigation(e));
        return { investigationId: r.aggregateId, version: r.version };
      },
      compensate: async (s) => {
        await s.send('Investigation', investigationIdFor(s.event.aggregateId), 'CloseInvestigation', {
          resolution: 'false-positive',
          summary: `Automatic containment rolled back: ${s.failure?.step ?? 'a step'} failed (${s.failure?.error ?? 'unknown error'})`.slice(0, 10_000),
        });
      },
    },
    {
      name: 'note-indicator',
      run: async (s) => {
        const signature = (s.event.payload as HighPriorityThreatDetected).signature;
        await s.send('Investigation', investigationIdFor(s.event.aggregateId), 'AddInvestigationNote', { note: `Indicator ${signature} flagged by threat ${s.event.aggregateId}` });
      },
      compensate: async (s) => {
        const signature = (s.event.payload as HighPriorityThreatDetected).signature;
        await s.send('Investigation', investigationIdFor(s.event.aggregateId), 'AddInvestigationNote', { note: `Indicator ${signature} link withdrawn` });
      },
    },
    {
      name: 'tag-indicator',
      run: async (s) => {
        const signature = (s.event.payload as HighPriorityThreatDetected).signature;
        await s.send('Entity', signature, 'TagEntity', { tag: HIGH_PRIORITY_TAG });
      },
    },
  ],
};

/** Run the containThreat saga. */
export function runContainThreat(options: SagaOptions): Promise<Saga> {
  return saga(containThreat, options);
}
