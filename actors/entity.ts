/**
 * Entity: an indicator under investigation (an IP, a domain, a URL, a file hash, an email
 * address, a user account) that enrichment sources annotate and analysts tag.
 *
 * No personal data in the clear: for the kinds in PSEUDONYMIZED_KINDS the log and the state
 * hold only the SHA-256 of the value (hex) and `pseudonymized: true`; the raw value exists
 * only in the command. The hash is computed in decide, so it is written once and replay
 * never needs the raw value. A plain hash is pseudonymization, not anonymization: it lets
 * analysts join on the same user without reading the name, and callers must still not use
 * the raw value as the aggregate id.
 */
import { createHash } from 'node:crypto';
import { defineActor, reject } from '../runtime/index.ts';

export const ENTITY_KINDS = ['ip', 'domain', 'url', 'file-hash', 'email', 'user'] as const;
export type EntityKind = (typeof ENTITY_KINDS)[number];
/** Kinds whose values are personal data: stored as a SHA-256 digest only. */
export const PSEUDONYMIZED_KINDS: ReadonlySet<EntityKind> = new Set<EntityKind>(['user', 'email']);

export const MAX_TAGS = 64;
export type AttributeValue = string | number | boolean;

export interface EntityState {
  readonly registered: boolean;
  readonly kind: EntityKind | null;
  /** The value in the clear, or null when the kind is pseudonymized. */
  readonly value: string | null;
  readonly valueSha256: string | null;
  readonly pseudonymized: boolean;
  readonly attributes: Readonly<Record<string, AttributeValue>>;
  /** Enrichment sources in the order they first reported. */
  readonly sources: readonly string[];
  readonly tags: readonly string[];
}

export interface RegisterEntity { readonly kind: EntityKind; readonly value: string }
export interface EnrichEntity { readonly source: string; readonly attributes: Readonly<Record<string, AttributeValue>> }
export interface TagEntity { readonly tag: string }

export interface EntityRegistered { readonly kind: EntityKind; readonly value: string | null; readonly valueSha256: string; readonly pseudonymized: boolean }
export interface EntityEnriched { readonly source: string; readonly attributes: Readonly<Record<string, AttributeValue>> }
export interface EntityTagged { readonly tag: string }

export function sha256Hex(value: string): string {
  return createHash('sha256').update(value, 'utf8').digest('hex');
}

const kind = { type: 'string', enum: ENTITY_KINDS } as const;
const source = { type: 'string', minLength: 1, maxLength: 64 } as const;
const tag = { type: 'string', minLength: 1, maxLength: 64, pattern: '^[a-z0-9][a-z0-9:._-]*$' } as const;
const sha = { type: 'string', pattern: '^[0-9a-f]{64}$' } as const;
const attributes = {
  type: 'object',
  minProperties: 1,
  maxProperties: 64,
  propertyNames: { pattern: '^[A-Za-z][A-Za-z0-9_.-]{0,63}$' },
  additionalProperties: { anyOf: [{ type: 'string', maxLength: 1024 }, { type: 'number' }, { type: 'boolean' }] },
} as const;

function object(properties: Record<string, unknown>, required: readonly string[]) {
  return { type: 'object', properties, required, additionalProperties: false };
}

export const entity = defineActor<EntityState>({
  type: 'Entity',
  initialState: () => ({
    registered: false, kind: null, value: null, valueSha256: null, pseudonymized: false, attributes: {}, sources: [], tags: [],
  }),
  commands: {
    RegisterEntity: {
      schema: object({ kind, value: { type: 'string', minLength: 1, maxLength: 2048 } }, ['kind', 'value']),
      decide: (s, c: RegisterEntity) => {
        if (s.registered) reject('entity-already-registered', { kind: s.kind });
        const pseudonymized = PSEUDONYMIZED_KINDS.has(c.kind);
        const payload: EntityRegistered = { kind: c.kind, value: pseudonymized ? null : c.value, valueSha256: sha256Hex(c.value), pseudonymized };
        return { type: 'EntityRegistered', payload };
      },
    },
    EnrichEntity: {
      schema: object({ source, attributes }, ['source', 'attributes']),
      decide: (s, c: EnrichEntity) => {
        if (!s.registered) reject('entity-not-registered');
        const payload: EntityEnriched = { source: c.source, attributes: c.attributes };
        return { type: 'EntityEnriched', payload };
      },
    },
    TagEntity: {
      schema: object({ tag }, ['tag']),
      decide: (s, c: TagEntity) => {
        if (!s.registered) reject('entity-not-registered');
        if (s.tags.includes(c.tag)) return [];
        if (s.tags.length >= MAX_TAGS) reject('too-many-tags', { max: MAX_TAGS });
        const payload: EntityTagged = { tag: c.tag };
        return { type: 'EntityTagged', payload };
      },
    },
  },
  events: {
    EntityRegistered: {
      // The digest of a user or email value is pseudonymized personal data: declared, so the guard lets it pass.
      hashed: ['valueSha256'],
      schema: {
        ...object({ kind, value: { anyOf: [{ type: 'string', minLength: 1, maxLength: 2048 }, { type: 'null' }] }, valueSha256: sha, pseudonymized: { type: 'boolean' } },
          ['kind', 'value', 'valueSha256', 'pseudonymized']),
        // A pseudonymized entity never carries its value in the clear.
        if: { properties: { pseudonymized: { const: true } } },
        then: { properties: { value: { type: 'null' } } },
      },
      evolve: (s, e: EntityRegistered) => ({
        ...s, registered: true, kind: e.kind, value: e.value, valueSha256: e.valueSha256, pseudonymized: e.pseudonymized,
      }),
    },
    EntityEnriched: {
      schema: object({ source, attributes }, ['source', 'attributes']),
      evolve: (s, e: EntityEnriched) => ({
        ...s,
        attributes: { ...s.attributes, ...e.attributes },
        sources: s.sources.includes(e.source) ? s.sources : [...s.sources, e.source],
      }),
    },
    EntityTagged: {
      schema: object({ tag }, ['tag']),
      evolve: (s, e: EntityTagged) => ({ ...s, tags: [...s.tags, e.tag] }),
    },
  },
  snapshotEvery: 20,
});
