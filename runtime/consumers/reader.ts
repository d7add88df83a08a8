/**
 * `eventReader`: how a consumer reads events as the current definitions describe them,
 * whatever version they were written in, with sensitive fields decrypted for those who hold
 * the keys and redacted for everyone else (or once the subject's keys were shredded).
 *
 *   const keys = await openKeyRing({ servers, stream: 'TROUPE' });
 *   const read = eventReader({ actors: [investigation], keys });
 *   consumer({ ..., transform: read });
 */
import { decodeCommits, type EventEnvelope } from '../journal/codec.ts';
import { COMMIT } from '../wire.ts';
import { readCommit, readEnvelope } from '../contracts/contract.ts';
import type { KeyRing } from '../contracts/crypto.ts';
import type { ActorDefinition } from '../define.ts';
import { Registry } from '../contracts/registry.ts';

export interface EventReaderOptions {
  /** The actor definitions whose upcasters apply (events of other types are only decrypted). */
  actors?: readonly ActorDefinition<unknown>[];
  /** Or a registry (e.g. `loadRegistry(paths)`); its key ring is used when `keys` is not given. */
  registry?: Registry;
  /** The key ring (`openKeyRing`). Without one, every sensitive field reads as the redacted marker. */
  keys?: KeyRing | null;
}

/** A transform for consumers: EventEnvelope in, the same event at its current version out. */
export type EventTransform = (e: EventEnvelope) => EventEnvelope | Promise<EventEnvelope>;

function registryOf(opts: EventReaderOptions): Registry {
  if (opts.registry !== undefined) return opts.registry;
  const registry = new Registry();
  for (const def of opts.actors ?? []) registry.add(def);
  return registry;
}

/**
 * Build the consumer transform: decrypt (or redact) sensitive fields, then upcast the payload
 * to the current version of its event type. Synchronous unless a key must be fetched from the
 * key bucket (a key created by another process since the ring was opened).
 */
export function eventReader(opts: EventReaderOptions = {}): EventTransform {
  const registry = registryOf(opts);
  const ring = opts.keys !== undefined ? opts.keys : registry.keys;
  return (e) => readEnvelope(registry.get(e.aggregateType), e, ring, 'redact');
}

/** Decode one log message (a commit batch) into envelopes read like `eventReader` reads them. */
export async function readLogMessage(data: Uint8Array, position: number, opts: EventReaderOptions = {}): Promise<EventEnvelope[]> {
  const registry = registryOf(opts);
  const ring = opts.keys !== undefined ? opts.keys : registry.keys;
  const out: EventEnvelope[] = [];
  for (const c of decodeCommits(data)) for (const e of await readCommit(registry.get(c[COMMIT.type]), c, position, ring, 'redact')) out.push(e);
  return out;
}
