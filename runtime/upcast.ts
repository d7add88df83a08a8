/**
 * Upcasters: how an event payload (or a snapshot's state) written under an older version of a
 * definition is read under the current one, without touching the log.
 *
 *   events: {
 *     TicketOpened: {
 *       version: 3,
 *       schema: v3,
 *       upcasters: [
 *         upcast(1, 2, addField('priority', 'normal')),
 *         upcast(2, 3, renameField('title', 'subject'), removeField('legacy')),
 *       ],
 *       evolve: ...
 *     },
 *   }
 *
 * Each upcaster goes from one version to the next. Chains are checked when the actor is
 * defined: a gap, a duplicate or a step backwards (a cycle) is an InvalidDefinitionError that
 * names the type and the versions. Upcasters are pure: they return a new payload and never
 * change the one they get (it may be frozen, or shared with other readers).
 */
import { InvalidDefinitionError } from './errors.ts';

/** What an upcaster knows besides the payload. */
export interface UpcastContext {
  readonly aggregateType: string;
  /** The event type, or `state` for a state upcaster. */
  readonly name: string;
  /** The version the payload is in, and the one this step produces. */
  readonly from: number;
  readonly to: number;
  /** Present for events read from the log. */
  readonly aggregateId?: string;
  readonly eventId?: string;
  readonly timestamp?: string;
}

// Payloads are whatever the log holds: typed loosely so helpers compose with user functions.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type UpcastFn = (payload: any, ctx: UpcastContext) => any;

export interface Upcaster {
  readonly from: number;
  readonly to: number;
  readonly up: UpcastFn | readonly UpcastFn[];
}

/** An upcaster from `from` to `to` (= from + 1) that applies `steps` in order. */
export function upcast(from: number, to: number, ...steps: UpcastFn[]): Upcaster {
  return Object.freeze({ from, to, up: steps.length === 1 ? steps[0]! : Object.freeze(steps) });
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function splitPath(path: string): string[] {
  const parts = path.split('.');
  if (parts.some((p) => p.length === 0)) throw new InvalidDefinitionError(`upcaster field path ${JSON.stringify(path)} is not a name or a dotted path (a.b)`);
  return parts;
}

/** Copy-on-write set at a path; intermediate objects are created as needed. */
function setIn(obj: Record<string, unknown>, parts: readonly string[], value: unknown): Record<string, unknown> {
  const [head, ...rest] = parts as [string, ...string[]];
  const out = { ...obj };
  out[head] = rest.length === 0 ? value : setIn(isRecord(obj[head]) ? obj[head] : {}, rest, value);
  return out;
}

function getIn(obj: unknown, parts: readonly string[]): { found: boolean; value: unknown } {
  let cur: unknown = obj;
  for (const p of parts) {
    if (!isRecord(cur) || !Object.prototype.hasOwnProperty.call(cur, p)) return { found: false, value: undefined };
    cur = cur[p];
  }
  return { found: true, value: cur };
}

function deleteIn(obj: Record<string, unknown>, parts: readonly string[]): Record<string, unknown> {
  const [head, ...rest] = parts as [string, ...string[]];
  if (!Object.prototype.hasOwnProperty.call(obj, head)) return obj;
  const out = { ...obj };
  if (rest.length === 0) delete out[head];
  else if (isRecord(obj[head])) out[head] = deleteIn(obj[head], rest);
  return out;
}

/**
 * Add a field with a default when it is absent. `value` may be a function of the payload
 * (`addField('priority', (p) => p.severity ?? 'low')`). `name` may be a dotted path.
 */
export function addField(name: string, value: unknown): UpcastFn {
  const parts = splitPath(name);
  const compute = typeof value === 'function' ? value as (p: unknown, ctx: UpcastContext) => unknown : undefined;
  const fn: UpcastFn = (payload, ctx) => {
    if (!isRecord(payload)) return payload;
    if (getIn(payload, parts).found) return payload;
    return setIn(payload, parts, compute !== undefined ? compute(payload, ctx) : structuredClone(value));
  };
  return named(fn, `addField(${name})`);
}

/** Rename a field (keeping its value); nothing happens when it is absent. Dotted paths allowed. */
export function renameField(from: string, to: string): UpcastFn {
  const src = splitPath(from);
  const dst = splitPath(to);
  const fn: UpcastFn = (payload) => {
    if (!isRecord(payload)) return payload;
    const { found, value } = getIn(payload, src);
    if (!found) return payload;
    return setIn(deleteIn(payload, src), dst, value);
  };
  return named(fn, `renameField(${from}, ${to})`);
}

/** Remove a field; nothing happens when it is absent. Dotted paths allowed. */
export function removeField(name: string): UpcastFn {
  const parts = splitPath(name);
  const fn: UpcastFn = (payload) => (isRecord(payload) ? deleteIn(payload, parts) : payload);
  return named(fn, `removeField(${name})`);
}

function named(fn: UpcastFn, name: string): UpcastFn {
  Object.defineProperty(fn, 'name', { value: name });
  return fn;
}

/** Steps applied left to right. */
export function compose(...steps: UpcastFn[]): UpcastFn {
  return (payload, ctx) => {
    let p = payload;
    for (const s of steps) p = s(p, ctx);
    return p;
  };
}

// ── chains ─────────────────────────────────────────────────────────────────────────────────

/**
 * A checked chain: `steps[v]` takes version v to v + 1. `oldest` is the first version it can
 * read (1 for events; for state, the lowest `from`, or `current` when there are no upcasters).
 */
export interface UpcastChain {
  readonly current: number;
  readonly oldest: number;
  readonly steps: ReadonlyMap<number, UpcastFn>;
}

/**
 * Check a chain and compile it. Events need every step from 1 to `current` (a gap is an error);
 * state may start later (older snapshots are rebuilt from the log), but must be contiguous up
 * to `current`.
 */
export function checkChain(kind: 'event' | 'state', aggregateType: string, name: string, current: number, upcasters: readonly Upcaster[] | undefined): UpcastChain {
  const what = kind === 'event' ? `actor ${aggregateType}: event ${name}` : `actor ${aggregateType}: state`;
  const data = { aggregateType, ...(kind === 'event' ? { eventType: name } : {}) };
  const fail = (message: string, extra: Record<string, unknown> = {}): never => {
    throw new InvalidDefinitionError(`${what}: ${message}`, { ...data, ...extra });
  };
  const list = upcasters ?? [];
  if (!Array.isArray(list)) fail('upcasters must be an array of upcast(from, to, ...steps)');
  const steps = new Map<number, UpcastFn>();
  for (const u of list) {
    if (typeof u !== 'object' || u === null) fail(`upcasters must be made with upcast(from, to, ...steps), got ${JSON.stringify(u)}`);
    const { from, to } = u;
    if (!Number.isInteger(from) || !Number.isInteger(to) || from < 1 || to < 1) fail(`upcaster versions must be positive integers, got v${String(from)}→v${String(to)}`, { from, to });
    if (to <= from) fail(`upcaster v${from}→v${to} goes back, which makes a cycle; upcasters go from one version to the next (v${from}→v${from + 1})`, { from, to });
    if (to !== from + 1) fail(`upcaster v${from}→v${to} skips ${to - from === 2 ? `v${from + 1}` : `v${from + 1}…v${to - 1}`}; upcasters go from one version to the next (a gap)`, { from, to });
    if (to > current) fail(`upcaster v${from}→v${to} goes past the current version ${current}; raise version to ${to} or drop the upcaster`, { from, to, version: current });
    if (steps.has(from)) fail(`two upcasters from v${from} (v${from}→v${to} is declared twice); keep one`, { from, to });
    const up = u.up;
    const fns = Array.isArray(up) ? up as readonly UpcastFn[] : [up as UpcastFn];
    if (fns.length === 0 || fns.some((f) => typeof f !== 'function')) fail(`upcaster v${from}→v${to} needs functions (addField, renameField, removeField, or your own)`, { from, to });
    steps.set(from, fns.length === 1 ? fns[0]! : compose(...fns));
  }
  let oldest = current;
  if (kind === 'event') {
    const missing: string[] = [];
    for (let v = 1; v < current; v++) if (!steps.has(v)) missing.push(`v${v}→v${v + 1}`);
    if (missing.length > 0) fail(`version ${current} needs upcasters from v1, but ${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} missing (a gap)`, { version: current, missing });
    oldest = 1;
  } else if (steps.size > 0) {
    oldest = Math.min(...steps.keys());
    const missing: string[] = [];
    for (let v = oldest; v < current; v++) if (!steps.has(v)) missing.push(`v${v}→v${v + 1}`);
    if (missing.length > 0) fail(`stateVersion ${current}: the state upcasters from v${oldest} miss ${missing.join(', ')} (a gap)`, { version: current, missing });
  }
  return Object.freeze({ current, oldest, steps });
}

/**
 * Bring a payload from `version` to the chain's current version. Returns undefined when the
 * chain cannot (the version is newer than the definition or older than its oldest step).
 * Upcaster errors propagate.
 */
export function runChain(chain: UpcastChain, version: number, payload: unknown, base: Omit<UpcastContext, 'from' | 'to'>): { ok: true; value: unknown } | { ok: false } {
  if (version === chain.current) return { ok: true, value: payload };
  if (version > chain.current || version < chain.oldest) return { ok: false };
  let p = payload;
  for (let v = version; v < chain.current; v++) p = chain.steps.get(v)!(p, { ...base, from: v, to: v + 1 });
  return { ok: true, value: p };
}
