/**
 * Investigation: a security analyst's case. Created (optionally from a detected threat),
 * assigned, re-prioritised, annotated, closed. A closed investigation accepts no further
 * commands. Notes are facts in the log; the state only counts them, so snapshots stay small.
 *
 * Notes and closing summaries are free text that may name people, accounts or credentials:
 * they are declared sensitive, so the log holds them encrypted under the key of the analyst
 * who wrote them (`user:<userId>`); shredding that user's keys redacts them everywhere.
 */
import { defineActor, reject } from '../runtime/index.ts';

export const SEVERITIES = ['low', 'medium', 'high', 'critical'] as const;
export type Severity = (typeof SEVERITIES)[number];

export const RESOLUTIONS = ['resolved', 'false-positive', 'benign', 'duplicate'] as const;
export type Resolution = (typeof RESOLUTIONS)[number];

export interface InvestigationState {
  readonly status: 'none' | 'open' | 'closed';
  readonly title: string;
  readonly severity: Severity | null;
  readonly priority: Severity | null;
  readonly sourceThreatId: string | null;
  readonly assignee: string | null;
  readonly noteCount: number;
  readonly resolution: Resolution | null;
}

export interface CreateInvestigation { readonly title: string; readonly severity: Severity; readonly sourceThreatId?: string }
export interface AssignInvestigation { readonly analystId: string }
export interface ChangeInvestigationPriority { readonly priority: Severity }
export interface AddInvestigationNote { readonly note: string }
export interface CloseInvestigation { readonly resolution: Resolution; readonly summary?: string }

export interface InvestigationCreated { readonly title: string; readonly severity: Severity; readonly sourceThreatId: string | null; readonly createdBy: string | null }
export interface InvestigationAssigned { readonly analystId: string; readonly previousAnalystId: string | null }
export interface InvestigationPriorityChanged { readonly priority: Severity; readonly previousPriority: Severity }
export interface InvestigationNoteAdded { readonly note: string; readonly authorId: string | null }
export interface InvestigationClosed { readonly resolution: Resolution; readonly summary: string | null; readonly closedBy: string | null }

const id = { type: 'string', minLength: 1, maxLength: 128 } as const;
const severity = { type: 'string', enum: SEVERITIES } as const;
const nullableId = { anyOf: [id, { type: 'null' }] } as const;
const title = { type: 'string', minLength: 1, maxLength: 200 } as const;
const note = { type: 'string', minLength: 1, maxLength: 10_000 } as const;
const resolution = { type: 'string', enum: RESOLUTIONS } as const;

function object(properties: Record<string, unknown>, required: readonly string[]) {
  return { type: 'object', properties, required, additionalProperties: false };
}

/** Rejects unless the investigation exists and is still open. */
function mustBeOpen(s: InvestigationState): void {
  if (s.status === 'none') reject('investigation-not-created');
  if (s.status === 'closed') reject('investigation-closed');
}

export const investigation = defineActor<InvestigationState>({
  type: 'Investigation',
  initialState: () => ({
    status: 'none', title: '', severity: null, priority: null, sourceThreatId: null, assignee: null, noteCount: 0, resolution: null,
  }),
  commands: {
    CreateInvestigation: {
      schema: object({ title, severity, sourceThreatId: id }, ['title', 'severity']),
      decide: (s, c: CreateInvestigation, ctx) => {
        if (s.status !== 'none') reject('investigation-already-created');
        const payload: InvestigationCreated = { title: c.title, severity: c.severity, sourceThreatId: c.sourceThreatId ?? null, createdBy: ctx.userId ?? null };
        return { type: 'InvestigationCreated', payload };
      },
    },
    AssignInvestigation: {
      schema: object({ analystId: id }, ['analystId']),
      decide: (s, c: AssignInvestigation) => {
        mustBeOpen(s);
        if (s.assignee === c.analystId) return [];
        const payload: InvestigationAssigned = { analystId: c.analystId, previousAnalystId: s.assignee };
        return { type: 'InvestigationAssigned', payload };
      },
    },
    ChangeInvestigationPriority: {
      schema: object({ priority: severity }, ['priority']),
      decide: (s, c: ChangeInvestigationPriority) => {
        mustBeOpen(s);
        if (s.priority === c.priority) return [];
        const payload: InvestigationPriorityChanged = { priority: c.priority, previousPriority: s.priority! };
        return { type: 'InvestigationPriorityChanged', payload };
      },
    },
    AddInvestigationNote: {
      schema: object({ note }, ['note']),
      decide: (s, c: AddInvestigationNote, ctx) => {
        mustBeOpen(s);
        const payload: InvestigationNoteAdded = { note: c.note, authorId: ctx.userId ?? null };
        return { type: 'InvestigationNoteAdded', payload };
      },
    },
    CloseInvestigation: {
      schema: object({ resolution, summary: note }, ['resolution']),
      decide: (s, c: CloseInvestigation, ctx) => {
        if (s.status === 'none') reject('investigation-not-created');
        if (s.status === 'closed') reject('investigation-already-closed', { resolution: s.resolution });
        const payload: InvestigationClosed = { resolution: c.resolution, summary: c.summary ?? null, closedBy: ctx.userId ?? null };
        return { type: 'InvestigationClosed', payload };
      },
    },
  },
  events: {
    InvestigationCreated: {
      schema: object({ title, severity, sourceThreatId: nullableId, createdBy: nullableId }, ['title', 'severity', 'sourceThreatId', 'createdBy']),
      evolve: (s, e: InvestigationCreated) => ({
        ...s, status: 'open', title: e.title, severity: e.severity, priority: e.severity, sourceThreatId: e.sourceThreatId,
      }),
    },
    InvestigationAssigned: {
      schema: object({ analystId: id, previousAnalystId: nullableId }, ['analystId', 'previousAnalystId']),
      evolve: (s, e: InvestigationAssigned) => ({ ...s, assignee: e.analystId }),
    },
    InvestigationPriorityChanged: {
      schema: object({ priority: severity, previousPriority: severity }, ['priority', 'previousPriority']),
      evolve: (s, e: InvestigationPriorityChanged) => ({ ...s, priority: e.priority }),
    },
    InvestigationNoteAdded: {
      schema: object({ note, authorId: nullableId }, ['note', 'authorId']),
      sensitive: { fields: ['note'], subject: 'user' },
      evolve: (s) => ({ ...s, noteCount: s.noteCount + 1 }),
    },
    InvestigationClosed: {
      schema: object({ resolution, summary: { anyOf: [note, { type: 'null' }] }, closedBy: nullableId }, ['resolution', 'summary', 'closedBy']),
      sensitive: { fields: ['summary'], subject: 'user' },
      evolve: (s, e: InvestigationClosed) => ({ ...s, status: 'closed', resolution: e.resolution }),
    },
  },
  snapshotEvery: 50,
});
