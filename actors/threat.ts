/**
 * Threat: one detection from a sensor or rule. A detection with score >= HIGH_PRIORITY_SCORE
 * also emits HighPriorityThreatDetected, a second fact that subscribers (paging, automatic
 * investigations) can listen for without re-applying the threshold themselves.
 */
import { defineActor, reject } from '../runtime/index.ts';

export const HIGH_PRIORITY_SCORE = 80;

export interface ThreatState {
  readonly status: 'none' | 'detected' | 'dismissed';
  readonly signature: string | null;
  readonly score: number;
  readonly source: string | null;
  readonly highPriority: boolean;
  readonly dismissReason: string | null;
}

export interface DetectThreat { readonly signature: string; readonly score: number; readonly source: string }
export interface DismissThreat { readonly reason: string }

export interface ThreatDetected { readonly signature: string; readonly score: number; readonly source: string }
export interface HighPriorityThreatDetected { readonly signature: string; readonly score: number }
export interface ThreatDismissed { readonly reason: string; readonly dismissedBy: string | null }

const signature = { type: 'string', minLength: 1, maxLength: 256 } as const;
const score = { type: 'integer', minimum: 0, maximum: 100 } as const;
const source = { type: 'string', minLength: 1, maxLength: 64 } as const;
const reason = { type: 'string', minLength: 1, maxLength: 2000 } as const;

function object(properties: Record<string, unknown>, required: readonly string[]) {
  return { type: 'object', properties, required, additionalProperties: false };
}

export const threat = defineActor<ThreatState>({
  type: 'Threat',
  initialState: () => ({ status: 'none', signature: null, score: 0, source: null, highPriority: false, dismissReason: null }),
  commands: {
    DetectThreat: {
      schema: object({ signature, score, source }, ['signature', 'score', 'source']),
      decide: (s, c: DetectThreat) => {
        if (s.status !== 'none') reject('threat-already-detected', { status: s.status });
        const detected: ThreatDetected = { signature: c.signature, score: c.score, source: c.source };
        if (c.score < HIGH_PRIORITY_SCORE) return { type: 'ThreatDetected', payload: detected };
        const high: HighPriorityThreatDetected = { signature: c.signature, score: c.score };
        return [{ type: 'ThreatDetected', payload: detected }, { type: 'HighPriorityThreatDetected', payload: high }];
      },
    },
    DismissThreat: {
      schema: object({ reason }, ['reason']),
      decide: (s, c: DismissThreat, ctx) => {
        if (s.status === 'none') reject('threat-not-detected');
        if (s.status === 'dismissed') reject('threat-already-dismissed');
        const payload: ThreatDismissed = { reason: c.reason, dismissedBy: ctx.userId ?? null };
        return { type: 'ThreatDismissed', payload };
      },
    },
  },
  events: {
    ThreatDetected: {
      schema: object({ signature, score, source }, ['signature', 'score', 'source']),
      evolve: (s, e: ThreatDetected) => ({ ...s, status: 'detected', signature: e.signature, score: e.score, source: e.source }),
    },
    HighPriorityThreatDetected: {
      schema: object({ signature, score: { ...score, minimum: HIGH_PRIORITY_SCORE } }, ['signature', 'score']),
      evolve: (s) => ({ ...s, highPriority: true }),
    },
    ThreatDismissed: {
      schema: object({ reason, dismissedBy: { anyOf: [{ type: 'string', minLength: 1, maxLength: 128 }, { type: 'null' }] } }, ['reason', 'dismissedBy']),
      evolve: (s, e: ThreatDismissed) => ({ ...s, status: 'dismissed', dismissReason: e.reason }),
    },
  },
  snapshotEvery: 10,
});
