/**
 * The sensitive-data guard: refuses an event whose fields look like secrets or personal data
 * (a field named `password`, a value that reads like a card number or an SSN, ...) unless the
 * field is declared `sensitive` (encrypted) or `hashed`. Nothing of the value is ever put in
 * the error: it names the event, the field and the pattern.
 *
 * Two checks, both from one list of patterns:
 * - at definition: the property names in each event's JSON Schema (`checkSchemaNames`);
 * - before append: the payload's field names and string values (`compileGuard`). A payload
 *   whose schema admits no free string and no unknown field (Account's `{ amount: integer }`)
 *   is not scanned at all, so the guard costs nothing on such hot paths.
 */
import type { JsonSchema } from './define.ts';

/** One thing the guard looks for: a field name, a value, or both (either matching flags the field). */
export interface GuardPattern {
  /** Short id used in errors and in `allow`, e.g. `card-number`. */
  readonly name: string;
  /** What it is, for the error: "a password", "personal data (an email address)". */
  readonly describe: string;
  /** Tested against field names split into lower-case words joined by `_` (`cardNumber` → `card_number`). */
  readonly field?: RegExp;
  /** Tested against string values. */
  readonly value?: RegExp;
  /** Extra check of a value the `value` pattern matched (e.g. the Luhn checksum of a card number). */
  readonly check?: (match: string) => boolean;
}

export interface GuardConfig {
  /** `error` (default) refuses the event; `warn` emits a process warning once per field; `off` disables the guard. */
  mode?: 'error' | 'warn' | 'off';
  /** The patterns to look for. Default DEFAULT_GUARD_PATTERNS; compose with GUARD_PATTERNS to add or drop some. */
  patterns?: readonly GuardPattern[];
  /** Top-level fields, or `Event.field` names, the guard leaves alone (in addition to sensitive and hashed ones). */
  allow?: readonly string[];
}

function luhn(match: string): boolean {
  const digits = match.replace(/[^0-9]/g, '');
  if (digits.length < 13 || digits.length > 19) return false;
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = digits.charCodeAt(digits.length - 1 - i) - 48;
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return sum % 10 === 0;
}

const W = (words: string) => new RegExp(`(^|_)(${words})(_|$)`);

/**
 * A card number as people write one: 13–19 digits in a row, four groups of four (a fifth of 1–3
 * digits for 19-digit cards), or 4-6-5 (American Express), groups split by one space or hyphen.
 * Not any run of digits and hyphens: a UUID-shaped id whose groups happen to be digits
 * (8-4-4-4-12, like Troupe's event and command ids) is no card number, even when Luhn holds.
 */
const CARD_NUMBER = /(?<![\w-])(?:\d{13,19}|\d{4}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{1,3})?|\d{4}([ -])\d{6}\2\d{5})(?![\w-])/;

/** Every pattern Troupe knows, by name. DEFAULT_GUARD_PATTERNS is a subset with few false positives. */
export const GUARD_PATTERNS = Object.freeze({
  password: { name: 'password', describe: 'a password', field: W('password|passwd|passphrase|pwd') },
  secret: { name: 'secret', describe: 'a secret or credential', field: W('secret|client_secret|credentials?|private_key|api_key|apikey|access_key|secret_key|signing_key') },
  token: { name: 'token', describe: 'an access token', field: W('token|access_token|refresh_token|auth_token|session_token|bearer_token|id_token') },
  ssn: { name: 'ssn', describe: 'personal data (a social security number)', field: W('ssn|social_security(_number)?|national_id|tax_id'), value: /\b\d{3}-\d{2}-\d{4}\b/ },
  cardNumber: { name: 'card-number', describe: 'a payment card number', field: W('card_number|credit_card|cc_number|pan|cvv|cvc|card_cvv'), value: CARD_NUMBER, check: luhn },
  email: { name: 'email', describe: 'personal data (an email address)', field: W('email|email_address|e_mail'), value: /[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}/ },
  birthDate: { name: 'birth-date', describe: 'personal data (a date of birth)', field: W('dob|date_of_birth|birth_date|birthdate|birthday') },
  phone: { name: 'phone', describe: 'personal data (a phone number)', field: W('phone|phone_number|mobile|telephone'), value: /(?:^|[^\d])\+\d[\d ().-]{7,}\d/ },
  privateKey: { name: 'private-key', describe: 'a private key', value: /-----BEGIN [A-Z ]*PRIVATE KEY-----/ },
  awsAccessKey: { name: 'aws-access-key', describe: 'an AWS access key', value: /\b(AKIA|ASIA)[0-9A-Z]{16}\b/ },
  jwt: { name: 'jwt', describe: 'a JSON Web Token', value: /\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+/ },
  credentialAssignment: { name: 'credential-assignment', describe: 'a credential (password=..., token: ...)', value: /\b(password|passwd|pwd|secret|api[_-]?key|token)\s*[:=]\s*\S{4,}/i },
  iban: { name: 'iban', describe: 'a bank account number (IBAN)', field: W('iban|bank_account|account_number'), value: /\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?\b/ },
} satisfies Record<string, GuardPattern>);

/** What the guard looks for unless an actor configures otherwise. */
export const DEFAULT_GUARD_PATTERNS: readonly GuardPattern[] = Object.freeze([
  GUARD_PATTERNS.password, GUARD_PATTERNS.secret, GUARD_PATTERNS.token, GUARD_PATTERNS.ssn, GUARD_PATTERNS.cardNumber,
  GUARD_PATTERNS.email, GUARD_PATTERNS.birthDate, GUARD_PATTERNS.phone, GUARD_PATTERNS.privateKey, GUARD_PATTERNS.awsAccessKey,
  GUARD_PATTERNS.jwt, GUARD_PATTERNS.credentialAssignment,
]);

/** `cardNumber`, `card-number`, `CARD_NUMBER` → `card_number`. */
export function normalizeFieldName(name: string): string {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1_$2')
    .replace(/[^A-Za-z0-9]+/g, '_')
    .toLowerCase()
    .replace(/^_+|_+$/g, '');
}

/** The first pattern a field name matches. */
export function matchFieldName(name: string, patterns: readonly GuardPattern[]): GuardPattern | undefined {
  const n = normalizeFieldName(name);
  for (const p of patterns) if (p.field !== undefined && p.field.test(n)) return p;
  return undefined;
}

/** The first pattern a string value matches. */
export function matchValue(value: string, patterns: readonly GuardPattern[]): GuardPattern | undefined {
  for (const p of patterns) {
    if (p.value === undefined) continue;
    const m = p.value.exec(value);
    if (m !== null && (p.check === undefined || p.check(m[0]))) return p;
  }
  return undefined;
}

/** A finding: where and what, never the value. */
export interface GuardFinding {
  /** `payload.note`, `payload.attributes.password`. */
  readonly field: string;
  readonly pattern: GuardPattern;
  readonly by: 'name' | 'value';
}

/**
 * The property names of a JSON Schema (recursively through properties, items and
 * combinators) that match a name pattern, outside the exempt top-level fields.
 */
export function checkSchemaNames(schema: JsonSchema | undefined, patterns: readonly GuardPattern[], exempt: ReadonlySet<string>): GuardFinding[] {
  const out: GuardFinding[] = [];
  const visit = (s: unknown, path: string, depth: number) => {
    if (typeof s !== 'object' || s === null || depth > 16) return;
    const node = s as Record<string, unknown>;
    const props = node.properties;
    if (typeof props === 'object' && props !== null) {
      for (const [name, sub] of Object.entries(props)) {
        if (depth === 0 && exempt.has(name)) continue;
        const p = matchFieldName(name, patterns);
        if (p !== undefined) out.push({ field: `${path}.${name}`, pattern: p, by: 'name' });
        visit(sub, `${path}.${name}`, depth + 1);
      }
    }
    for (const key of ['items', 'additionalProperties', 'not', 'if', 'then', 'else']) visit(node[key], key === 'items' ? `${path}[]` : path, depth + (key === 'items' ? 1 : 0));
    for (const key of ['anyOf', 'oneOf', 'allOf', 'prefixItems']) {
      const list = node[key];
      if (Array.isArray(list)) for (const sub of list) visit(sub, path, depth);
    }
  };
  visit(schema, 'payload', 0);
  return out;
}

/**
 * True when a value valid under `schema` can hold no free text and no field name the schema
 * does not list: only numbers, booleans, null, or strings fixed by `enum` / `const`.
 */
export function schemaIsClosedToText(schema: JsonSchema | undefined, depth = 0): boolean {
  if (schema === undefined || depth > 16) return false;
  const s = schema as Record<string, unknown>;
  if (Array.isArray(s.enum) || 'const' in s) return true;
  for (const key of ['anyOf', 'oneOf']) {
    const list = s[key];
    if (Array.isArray(list)) return list.every((sub) => schemaIsClosedToText(sub as JsonSchema, depth + 1));
  }
  const types = Array.isArray(s.type) ? s.type as unknown[] : [s.type];
  if (types.some((t) => t === undefined || t === 'string')) return false;
  for (const t of types) {
    if (t === 'object') {
      if (s.additionalProperties !== false || s.patternProperties !== undefined) return false;
      const props = (s.properties ?? {}) as Record<string, JsonSchema>;
      if (!Object.values(props).every((p) => schemaIsClosedToText(p, depth + 1))) return false;
    } else if (t === 'array') {
      if (!schemaIsClosedToText(s.items as JsonSchema | undefined, depth + 1)) return false;
    } else if (t !== 'integer' && t !== 'number' && t !== 'boolean' && t !== 'null') {
      return false;
    }
  }
  return true;
}

/** Scan a payload (skipping exempt top-level fields); returns the first finding. */
export function scanPayload(payload: unknown, patterns: readonly GuardPattern[], exempt: ReadonlySet<string>): GuardFinding | undefined {
  const visit = (v: unknown, path: string, depth: number): GuardFinding | undefined => {
    if (typeof v === 'string') {
      const p = matchValue(v, patterns);
      return p === undefined ? undefined : { field: path, pattern: p, by: 'value' };
    }
    if (typeof v !== 'object' || v === null || depth > 32 || ArrayBuffer.isView(v)) return undefined;
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        const f = visit(v[i], `${path}[${i}]`, depth + 1);
        if (f !== undefined) return f;
      }
      return undefined;
    }
    for (const key of Object.keys(v)) {
      if (depth === 0 && exempt.has(key)) continue;
      const p = matchFieldName(key, patterns);
      if (p !== undefined) return { field: `${path}.${key}`, pattern: p, by: 'name' };
      const f = visit((v as Record<string, unknown>)[key], `${path}.${key}`, depth + 1);
      if (f !== undefined) return f;
    }
    return undefined;
  };
  return visit(payload, 'payload', 0);
}

/** The message of a guard refusal; never contains the value. */
export function guardMessage(what: string, f: GuardFinding): string {
  const how = f.by === 'name' ? 'is named like' : 'holds what looks like';
  return `${what}: ${f.field} ${how} ${f.pattern.describe} (guard pattern ${f.pattern.name}); secrets and personal data never go into an event in the clear: declare the field sensitive (encrypted) or hashed, store a reference instead, or list it in guard.allow`;
}

/**
 * The runtime check for one event type, or null when there is nothing to check (guard off,
 * or a schema that admits no text). Returns the first finding.
 */
export function compileGuard(schema: JsonSchema | undefined, patterns: readonly GuardPattern[], exempt: ReadonlySet<string>): ((payload: unknown) => GuardFinding | undefined) | null {
  if (patterns.length === 0 || schemaIsClosedToText(schema)) return null;
  return (payload) => scanPayload(payload, patterns, exempt);
}
