/**
 * The query side: named query handlers over read models, an optional TTL cache whose entries
 * are dropped when events for the aggregates they depend on are consumed, and read-your-writes
 * (`after: commandResult.position` waits until the projection has applied that position).
 *
 *   bus.register('investigation', { handler, ttlMs, dependsOn, projection })
 *   bus.watch(projection)                        // invalidate from what the projection applies
 *   await bus.query('investigation', { id }, { after: result.position })
 *
 * The cache is bounded (oldest entries go first) and never serves a result that was computed
 * while an invalidation happened (such a result is returned but not cached).
 */
import type { EventEnvelope } from '../journal/codec.ts';
import { InvalidOptionError, NotFoundError } from '../errors.ts';

/** An aggregate a result depends on; without an id, every aggregate of the type. */
export interface AggregateRef {
  aggregateType: string;
  aggregateId?: string;
}

/** Something that applies the log up to a position: a Projection, or a Consumer. */
export interface PositionSource {
  readonly position: number;
  waitFor(position: number, timeoutMs?: number): Promise<void>;
}

/** Something whose applied events can drop cache entries. */
export type EventSource =
  | { onApplied(listener: (events: EventEnvelope[]) => void): () => void }
  | { onCommitted(listener: (events: EventEnvelope[]) => void): () => void };

export interface QueryDefinition<P = unknown, R = unknown> {
  handler: (params: P) => R | Promise<R>;
  /** Keep results this long (ms). Default: not cached. */
  ttlMs?: number;
  /**
   * The aggregates a result depends on: its cache entry goes when events of any of them are
   * consumed. Default 'any': any consumed event drops it.
   */
  dependsOn?: (params: P, result: R) => readonly AggregateRef[] | 'any';
  /** Where `after` waits (read-your-writes). */
  projection?: PositionSource;
}

export interface QueryOptions {
  /** Answer only once the projection has applied the log up to this position (a command result's `position`). */
  after?: number;
  /** How long `after` may wait. Default 5,000 ms. */
  timeoutMs?: number;
  /** Skip the cache. */
  fresh?: boolean;
}

export interface QueryStats {
  hits: number;
  misses: number;
  entries: number;
  invalidated: number;
}

interface Entry {
  value: unknown;
  expiresAt: number;
  position: number;
  deps: string[];
}

const ANY = '*';

function depKey(type: string, id?: string): string {
  return id === undefined ? `${type}\u0000*` : `${type}\u0000${id}`;
}

/** JSON with sorted object keys: equal params give equal cache keys. */
export function stableKey(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v as object).sort()) out[k] = (v as Record<string, unknown>)[k];
    return out;
  }) ?? 'undefined';
}

export class QueryBus {
  private readonly queries = new Map<string, QueryDefinition>();
  private readonly cache = new Map<string, Entry>();
  private readonly byDep = new Map<string, Set<string>>();
  private readonly maxEntries: number;
  /** Bumped by every invalidation: a result computed across a bump is not cached. */
  private generation = 0;
  private readonly counters = { hits: 0, misses: 0, invalidated: 0 };

  constructor(options: { maxEntries?: number } = {}) {
    this.maxEntries = options.maxEntries ?? 10_000;
    if (!Number.isInteger(this.maxEntries) || this.maxEntries < 1) throw new InvalidOptionError(`options.maxEntries must be an integer >= 1, got ${JSON.stringify(options.maxEntries)}`, { field: 'maxEntries' });
  }

  register<P = unknown, R = unknown>(name: string, definition: QueryDefinition<P, R>): void {
    if (typeof name !== 'string' || name.length === 0) throw new InvalidOptionError(`a query needs a name, got ${JSON.stringify(name)}`, { field: 'name' });
    if (this.queries.has(name)) throw new InvalidOptionError(`a query named ${name} is registered already`, { field: 'name' });
    if (typeof definition?.handler !== 'function') throw new InvalidOptionError(`query ${name} needs a handler function`, { field: 'handler' });
    if (definition.ttlMs !== undefined && !(definition.ttlMs > 0)) throw new InvalidOptionError(`query ${name}: ttlMs must be > 0, got ${JSON.stringify(definition.ttlMs)}`, { field: 'ttlMs' });
    this.queries.set(name, definition as QueryDefinition);
  }

  names(): string[] {
    return [...this.queries.keys()];
  }

  async query<R = unknown>(name: string, params?: unknown, options: QueryOptions = {}): Promise<R> {
    const def = this.queries.get(name);
    if (def === undefined) throw new NotFoundError(`no query named ${JSON.stringify(name)}; registered: ${this.names().join(', ') || 'none'}`, { query: name });
    if (options.after !== undefined) {
      if (def.projection === undefined) {
        throw new InvalidOptionError(`query ${name} has no projection to wait on; register it with { projection } to use { after }`, { field: 'after' });
      }
      await def.projection.waitFor(options.after, options.timeoutMs ?? 5_000);
    }
    const cached = def.ttlMs !== undefined && options.fresh !== true;
    const key = `${name}\u0000${stableKey(params)}`;
    if (cached) {
      const e = this.cache.get(key);
      if (e !== undefined) {
        if (e.expiresAt > Date.now() && (options.after === undefined || e.position >= options.after)) {
          this.counters.hits++;
          return e.value as R;
        }
        this.drop(key);
      }
    }
    this.counters.misses++;
    const generation = this.generation;
    const position = def.projection?.position ?? 0;
    const value = await def.handler(params);
    if (cached && generation === this.generation) this.store(key, value, position, def, params);
    return value as R;
  }

  private store(key: string, value: unknown, position: number, def: QueryDefinition, params: unknown): void {
    const refs = def.dependsOn?.(params, value) ?? 'any';
    const deps = refs === 'any' ? [ANY] : refs.map((r) => depKey(r.aggregateType, r.aggregateId));
    this.drop(key);
    this.cache.set(key, { value, expiresAt: Date.now() + def.ttlMs!, position, deps });
    for (const d of deps) {
      let set = this.byDep.get(d);
      if (set === undefined) this.byDep.set(d, set = new Set());
      set.add(key);
    }
    while (this.cache.size > this.maxEntries) this.drop(this.cache.keys().next().value!);
  }

  private drop(key: string): void {
    const e = this.cache.get(key);
    if (e === undefined) return;
    this.cache.delete(key);
    for (const d of e.deps) {
      const set = this.byDep.get(d);
      set?.delete(key);
      if (set?.size === 0) this.byDep.delete(d);
    }
  }

  /** Drop the cached results that depend on these events' aggregates. */
  invalidate(events: readonly Pick<EventEnvelope, 'aggregateType' | 'aggregateId'>[]): void {
    if (events.length === 0) return;
    this.generation++;
    if (this.cache.size === 0) return;
    const keys = new Set<string>(this.byDep.get(ANY) ?? []);
    for (const e of events) {
      for (const k of this.byDep.get(depKey(e.aggregateType, e.aggregateId)) ?? []) keys.add(k);
      for (const k of this.byDep.get(depKey(e.aggregateType)) ?? []) keys.add(k);
    }
    for (const k of keys) this.drop(k);
    this.counters.invalidated += keys.size;
  }

  /** Invalidate from the events a projection (or consumer) applies. Returns an unsubscribe function. */
  watch(source: EventSource): () => void {
    const listener = (events: EventEnvelope[]) => this.invalidate(events);
    return 'onApplied' in source ? source.onApplied(listener) : source.onCommitted(listener);
  }

  clear(): void {
    this.cache.clear();
    this.byDep.clear();
  }

  stats(): QueryStats {
    return { ...this.counters, entries: this.cache.size };
  }
}
