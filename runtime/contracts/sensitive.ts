/**
 * Sensitive fields in events and snapshots.
 *
 * Events: each declared field is replaced, before the commit is encoded, by
 *   { $enc: kid, d: iv | tag | AES-256-GCM(msgpack(value)) }
 * with the event's ids as associated data (a value cannot be moved to another event or field).
 * `evolve` sees the clear payload; the log never does.
 *
 * Snapshots: a state built from decrypted values is "tainted" with the kids it was built with
 * (tracked per state object in a WeakMap, carried from state to state). Writing its snapshot
 * seals the whole state under a key derived from all those keys, so shredding any one of them
 * makes the snapshot unreadable and the actor is rebuilt from the log (where that subject's
 * values now read as redacted). A snapshot that cannot be sealed (a key is already gone) is
 * not written: LMDB never holds a sensitive value in the clear.
 */
import { hkdfSync, randomBytes } from 'node:crypto';
import { decode, encode } from '../journal/codec.ts';
import { decryptBytes, encryptBytes, type KeyRing } from './crypto.ts';
import { REDACTED } from '../define.ts';
import { InternalError, KeysUnavailableError, TroupeError, toWire, type WireError } from '../errors.ts';

/** A sensitive value as the log holds it. */
export interface EncryptedValue {
  /** The id of the subject key it was encrypted with. */
  readonly $enc: string;
  readonly d: Uint8Array;
}

export function isEncrypted(v: unknown): v is EncryptedValue {
  return typeof v === 'object' && v !== null && typeof (v as EncryptedValue).$enc === 'string' && (v as EncryptedValue).d instanceof Uint8Array;
}

function fieldAad(aggregateType: string, aggregateId: string, eventId: string, field: string): string {
  return `troupe/field/1\u0000${aggregateType}\u0000${aggregateId}\u0000${eventId}\u0000${field}`;
}

export function encryptValue(key: Uint8Array, kid: string, value: unknown, aggregateType: string, aggregateId: string, eventId: string, field: string): EncryptedValue {
  return { $enc: kid, d: encryptBytes(key, encode(value), fieldAad(aggregateType, aggregateId, eventId, field)) };
}

/** True when a top-level field of the payload is encrypted. */
export function hasEncryptedFields(payload: unknown): boolean {
  if (typeof payload !== 'object' || payload === null) return false;
  for (const k in payload as Record<string, unknown>) if (isEncrypted((payload as Record<string, unknown>)[k])) return true;
  return false;
}

/** The kids of a payload's encrypted fields that the ring has never seen (null when none). */
export function unknownKids(ring: KeyRing, payload: unknown, into: Set<string> | null): Set<string> | null {
  if (typeof payload !== 'object' || payload === null) return into;
  for (const k in payload as Record<string, unknown>) {
    const v = (payload as Record<string, unknown>)[k];
    if (isEncrypted(v) && ring.key(v.$enc) === undefined) (into ??= new Set()).add(v.$enc);
  }
  return into;
}

/** What reading a payload learned: the kids it decrypted with, and the fields it redacted. */
export interface ReadNotes {
  kids: string[];
  redacted: string[];
}

/**
 * How a reader without a key ring treats encrypted values: `redact` (a consumer that holds no
 * keys) or `throw` (a node, which must never fold a redacted value into state it snapshots
 * merely because it lacks keys).
 */
export type NoKeys = 'redact' | 'throw';

/**
 * Decrypt the encrypted top-level fields of a payload. A destroyed key gives `redacted`; a
 * kid the ring has not seen must have been loaded before (see `unknownKids`). Returns the
 * payload itself when nothing is encrypted.
 */
export function decryptFields(
  payload: unknown, ring: KeyRing | null, noKeys: NoKeys, redacted: unknown,
  aggregateType: string, aggregateId: string, eventId: string, eventType: string, notes: ReadNotes | null,
): unknown {
  if (!hasEncryptedFields(payload)) return payload;
  const out: Record<string, unknown> = { ...(payload as Record<string, unknown>) };
  for (const field of Object.keys(out)) {
    const v = out[field];
    if (!isEncrypted(v)) continue;
    if (ring === null) {
      if (noKeys === 'throw') {
        throw new KeysUnavailableError(`${aggregateType} ${aggregateId}: event ${eventType} ${eventId} has an encrypted field ${field}, but this reader has no key ring; declare the field sensitive on the actor so that nodes open the key bucket`, { aggregateType, aggregateId, eventType, field }, undefined, false);
      }
      out[field] = redacted;
      notes?.redacted.push(field);
      continue;
    }
    const key = ring.key(v.$enc);
    if (key === null) {
      out[field] = redacted;
      notes?.redacted.push(field);
      continue;
    }
    if (key === undefined) {
      throw new KeysUnavailableError(`${aggregateType} ${aggregateId}: event ${eventType} ${eventId}: key ${v.$enc} of field ${field} was not loaded`, { aggregateType, aggregateId, eventType, field, kid: v.$enc });
    }
    try {
      out[field] = decode(decryptBytes(key, v.d, fieldAad(aggregateType, aggregateId, eventId, field)));
    } catch (e) {
      throw new InternalError(`${aggregateType} ${aggregateId}: event ${eventType} ${eventId}: field ${field} does not decrypt with key ${v.$enc} (the data or its ids were altered)`, { aggregateType, aggregateId, eventType, field }, e);
    }
    notes?.kids.push(v.$enc);
  }
  return out;
}

export { REDACTED };

// ── taint: which keys a state was built with ───────────────────────────────────────────────

interface Taint {
  readonly ring: KeyRing;
  readonly kids: readonly string[];
}

const taints = new WeakMap<object, Taint>();

/** The kids a state was built with (empty when none). */
export function stateKeys(state: unknown): readonly string[] {
  return typeof state === 'object' && state !== null ? taints.get(state)?.kids ?? [] : [];
}

/** True when the state was built with any of these kids (a resident actor to evict after shredding). */
export function stateUsesKeys(state: unknown, kids: readonly string[]): boolean {
  const own = stateKeys(state);
  for (const kid of kids) if (own.includes(kid)) return true;
  return false;
}

/** `next` was folded from `prev` plus values decrypted with `kids`: it carries both. */
export function carryTaint(prev: unknown, next: unknown, ring: KeyRing | null, kids: readonly string[] | null): void {
  if (typeof next !== 'object' || next === null) return;
  const before = typeof prev === 'object' && prev !== null ? taints.get(prev) : undefined;
  if (kids === null || kids.length === 0 || ring === null) {
    if (before !== undefined && prev !== next) taints.set(next, before);
    return;
  }
  let merged = before?.kids ?? [];
  for (const kid of kids) if (!merged.includes(kid)) merged = [...merged, kid];
  if (before !== undefined && merged === before.kids) {
    if (prev !== next) taints.set(next, before);
    return;
  }
  taints.set(next, { ring, kids: merged });
}

/** The kids of the encrypted top-level fields of payloads, appended to `into`. */
export function collectKids(payload: unknown, into: string[]): void {
  if (typeof payload !== 'object' || payload === null) return;
  for (const k in payload as Record<string, unknown>) {
    const v = (payload as Record<string, unknown>)[k];
    if (isEncrypted(v) && !into.includes(v.$enc)) into.push(v.$enc);
  }
}

// ── sealed snapshots ───────────────────────────────────────────────────────────────────────

export interface SealedState {
  readonly $sealed: 1;
  readonly kids: readonly string[];
  readonly salt: Uint8Array;
  readonly d: Uint8Array;
}

export function isSealed(v: unknown): v is SealedState {
  return typeof v === 'object' && v !== null && (v as SealedState).$sealed === 1 && Array.isArray((v as SealedState).kids);
}

function sealKey(keys: readonly Uint8Array[], salt: Uint8Array): Buffer {
  return Buffer.from(hkdfSync('sha256', Buffer.concat(keys), salt, 'troupe/snapshot/1', 32));
}

function stateAad(type: string, id: string, kids: readonly string[]): string {
  return `troupe/state/1\u0000${type}\u0000${id}\u0000${kids.join(',')}`;
}

/**
 * The state to store in a snapshot: as it is when no sensitive value went into it; sealed
 * under its keys otherwise; `null` when it cannot be sealed (a key was destroyed): then no
 * snapshot may be written.
 */
export function sealState(type: string, id: string, state: unknown): unknown {
  const taint = typeof state === 'object' && state !== null ? taints.get(state) : undefined;
  if (taint === undefined) return state;
  const kids = [...taint.kids].sort();
  const keys: Buffer[] = [];
  for (const kid of kids) {
    const k = taint.ring.key(kid);
    if (k === null || k === undefined) return null;
    keys.push(k);
  }
  const salt = randomBytes(16);
  const sealed: SealedState = { $sealed: 1, kids, salt, d: encryptBytes(sealKey(keys, salt), encode(state), stateAad(type, id, kids)) };
  return sealed;
}

/** Open a sealed state; undefined when any of its keys is gone or unknown (the caller rebuilds from the log). */
export function unsealState(ring: KeyRing | null, type: string, id: string, sealed: SealedState): { state: unknown } | undefined {
  if (ring === null) return undefined;
  const keys: Buffer[] = [];
  for (const kid of sealed.kids) {
    const k = ring.key(kid);
    if (k === null || k === undefined) return undefined;
    keys.push(k);
  }
  let state: unknown;
  try {
    state = decode(decryptBytes(sealKey(keys, sealed.salt), sealed.d, stateAad(type, id, sealed.kids)));
  } catch {
    return undefined;
  }
  carryTaint(undefined, state, ring, sealed.kids);
  return { state };
}

/**
 * What the node hands `Store.putSnapshot`: the snapshot with its state sealed if needed, or null
 * (remove the snapshot, write nothing). The result carries the type-level mark that
 * journal/snapshots.ts `SealedSnapshot` asks for, so a snapshot that skipped this does not compile.
 */
export function sealSnapshot<T extends { state: unknown }>(type: string, id: string, snap: T): (T & { readonly __sealed: true }) | null {
  const state = sealState(type, id, snap.state);
  if (state === snap.state) return snap as T & { readonly __sealed: true };
  if (state === null) return null;
  return { ...snap, state } as T & { readonly __sealed: true };
}

// ── commands that wait for a new subject key ───────────────────────────────────────────────

/** The sentinel an event contract returns when the subject has no key yet; `pendingKeys()` says when it will. */
export const KEYS_PENDING: unique symbol = Symbol('troupe.keysPending');
let pending: Promise<unknown> | null = null;

export function setPendingKeys(p: Promise<unknown>): typeof KEYS_PENDING {
  pending = p;
  return KEYS_PENDING;
}

/** The promise behind the last KEYS_PENDING (creating the subject's key in the key store). */
export function pendingKeys(): Promise<unknown> {
  const p = pending ?? Promise.resolve();
  pending = null;
  return p;
}

/** The parts of an actor cell and command that `deferUntilKeys` uses (node/cell.ts's ActorCell and InboundCommand). */
interface DeferrableCell<C> {
  phase: 'activating' | 'running' | 'passivating';
  stash: C[] | null;
  activated: Promise<void> | null;
}

/**
 * Hold a command (and every later command of the same actor) until the subject key it needs
 * is stored, then submit them again in order. The key is stored before any event written
 * under it is appended, so a crash can never leave an event whose key is lost.
 */
export function deferUntilKeys<C extends { reply(error: WireError | null, result: null): void }>(
  cell: DeferrableCell<C>, cmd: C, ready: Promise<unknown>, resubmit: (c: C) => void,
): void {
  cell.phase = 'activating';
  (cell.stash ??= []).unshift(cmd);
  cell.activated = ready.then(
    () => {
      if (cell.phase !== 'activating' || cell.stash === null) return;
      const stash = cell.stash;
      cell.stash = null;
      cell.phase = 'running';
      for (const c of stash) resubmit(c);
    },
    (e: unknown) => {
      if (cell.phase !== 'activating' || cell.stash === null) return;
      const stash = cell.stash;
      cell.stash = null;
      cell.phase = 'running';
      const err = toWire(e instanceof TroupeError ? e : new KeysUnavailableError(`cannot create an encryption key: ${(e as Error)?.message ?? String(e)}`, {}, e));
      for (const c of stash) c.reply(err, null);
    },
  );
}
