import { describe, expect, it } from 'vitest';
import { account } from '../actors/index.ts';
import { compileGuard, matchFieldName, matchValue, normalizeFieldName, schemaIsClosedToText } from '../runtime/guard.ts';
import {
  DEFAULT_GUARD_PATTERNS, GUARD_PATTERNS, defineActor, isTroupeError, type ActorConfig, type GuardPattern, type TroupeError,
} from '../runtime/index.ts';
import { testActor } from '../runtime/testing/index.ts';

const P = DEFAULT_GUARD_PATTERNS;

describe('the guard\'s patterns', () => {
  it('splits field names into words before matching them', () => {
    expect(normalizeFieldName('cardNumber')).toBe('card_number');
    expect(normalizeFieldName('APIKey')).toBe('api_key');
    expect(normalizeFieldName('user-Password')).toBe('user_password');
    expect(matchFieldName('cardNumber', P)?.name).toBe('card-number');
    expect(matchFieldName('newPassword', P)?.name).toBe('password');
    expect(matchFieldName('ssn', P)?.name).toBe('ssn');
    expect(matchFieldName('apiKey', P)?.name).toBe('secret');
    expect(matchFieldName('refreshToken', P)?.name).toBe('token');
    expect(matchFieldName('dateOfBirth', P)?.name).toBe('birth-date');
    expect(matchFieldName('email', P)?.name).toBe('email');
  });

  it('leaves ordinary names alone', () => {
    for (const name of ['amount', 'title', 'note', 'analystId', 'valueSha256', 'signature', 'passed', 'tokenizer', 'pinned', 'secretary', 'severity', 'source']) {
      expect(matchFieldName(name, P), name).toBeUndefined();
    }
  });

  it('finds card numbers only when the Luhn checksum holds', () => {
    expect(matchValue('pay with 4111 1111 1111 1111 please', P)?.name).toBe('card-number');
    expect(matchValue('4111-1111-1111-1111', P)?.name).toBe('card-number');
    expect(matchValue('order 4111 1111 1111 1112', P)).toBeUndefined();
    expect(matchValue('3782 822463 10005', P)?.name).toBe('card-number');
  });

  it('takes no id shaped like Troupe\'s event and command ids for a card number, even when its digits pass Luhn', () => {
    // 39410522-8863-4071: 16 digits, Luhn-valid; a process manager's event once carried such a causationId.
    expect(matchValue('39410522-8863-4071-9215-000000000b94', P)).toBeUndefined();
    expect(matchValue('caused by 39410522-8863-4071-9215-000000000094', P)).toBeUndefined();
    expect(matchValue('build 20250101123456', P)).toBeUndefined();
  });

  it('finds SSNs, emails, private keys, AWS keys, JWTs and inline credentials', () => {
    expect(matchValue('ssn 078-05-1120', P)?.name).toBe('ssn');
    expect(matchValue('mail bob@example.com now', P)?.name).toBe('email');
    expect(matchValue('-----BEGIN RSA PRIVATE KEY-----\nMII', P)?.name).toBe('private-key');
    expect(matchValue('key AKIAIOSFODNN7EXAMPLE', P)?.name).toBe('aws-access-key');
    expect(matchValue('eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig', P)?.name).toBe('jwt');
    expect(matchValue('login with password=hunter22', P)?.name).toBe('credential-assignment');
  });

  it('leaves ordinary text alone', () => {
    for (const v of ['Phishing wave', 'ET TROJAN Win32', '10.0.0.1', 'evil.example.com', 'https://evil.example.com/x', 'a'.repeat(64), 'high', '2025-01-01T00:00:00Z']) {
      expect(matchValue(v, P), v).toBeUndefined();
    }
  });

  it('knows when a schema admits no text, so that nothing needs scanning', () => {
    for (const e of account.events.values()) expect(schemaIsClosedToText(e.schema), e.name).toBe(true);
    expect(schemaIsClosedToText({ type: 'object', properties: { note: { type: 'string' } }, additionalProperties: false })).toBe(false);
    expect(schemaIsClosedToText({ type: 'object', properties: { n: { type: 'integer' } } })).toBe(false);
    expect(schemaIsClosedToText({ type: 'object', properties: { kind: { type: 'string', enum: ['a', 'b'] } }, additionalProperties: false })).toBe(true);
    expect(compileGuard(account.events.get('Deposited')!.schema, P, new Set())).toBeNull();
  });
});

interface S { n: number }
const base = (events: ActorConfig<S>['events'], extra: Partial<ActorConfig<S>> = {}): ActorConfig<S> => ({
  type: 'Signup',
  initialState: () => ({ n: 0 }),
  commands: { SignUp: (_s, c: Record<string, unknown>) => ({ type: 'SignupCompleted', payload: c }) },
  events,
  ...extra,
});
const open = (props: Record<string, unknown>) => ({ type: 'object', properties: props, additionalProperties: false });

describe('the guard at definition', () => {
  it('refuses a schema field named like a secret, naming event, field and pattern', () => {
    expect(() => defineActor(base({ SignupCompleted: { schema: open({ login: { type: 'string' }, password: { type: 'string' } }), evolve: (s: S) => s } })))
      .toThrow('actor Signup: event SignupCompleted: payload.password is named like a password (guard pattern password); secrets and personal data never go into an event in the clear: declare the field sensitive (encrypted) or hashed, store a reference instead, or list it in guard.allow');
    expect(() => defineActor(base({ SignupCompleted: { schema: open({ card: open({ cardNumber: { type: 'string' } }) }), evolve: (s: S) => s } })))
      .toThrow(/payload\.card\.cardNumber is named like a payment card number/);
  });

  it('accepts it when the field is declared sensitive, hashed or allowed', () => {
    const schema = open({ email: { type: 'string' }, passwordHash: { type: 'string' } });
    expect(() => defineActor(base({ SignupCompleted: { schema, sensitive: ['email'], hashed: ['passwordHash'], evolve: (s: S) => s } }))).not.toThrow();
    expect(() => defineActor(base({ SignupCompleted: { schema, evolve: (s: S) => s } }, { guard: { allow: ['SignupCompleted.email', 'passwordHash'] } }))).not.toThrow();
    expect(() => defineActor(base({ SignupCompleted: { schema, evolve: (s: S) => s } }, { guard: false }))).not.toThrow();
  });

  it('takes configured patterns', () => {
    const badge: GuardPattern = { name: 'badge', describe: 'a badge number', field: /(^|_)badge(_|$)/, value: /\bBDG-\d{6}\b/ };
    const schema = open({ badge: { type: 'string' } });
    expect(() => defineActor(base({ SignupCompleted: { schema, evolve: (s: S) => s } }, { guard: { patterns: [...DEFAULT_GUARD_PATTERNS, badge] } }))).toThrow(/named like a badge number/);
    expect(() => defineActor(base({ SignupCompleted: { schema: open({ password: { type: 'string' } }), evolve: (s: S) => s } }, { guard: { patterns: [GUARD_PATTERNS.email] } }))).not.toThrow();
  });

  it('only warns in warn mode', () => {
    const warnings: string[] = [];
    const original = process.emitWarning;
    process.emitWarning = ((w: string) => { warnings.push(w); }) as typeof process.emitWarning;
    try {
      defineActor(base({ SignupCompleted: { schema: open({ password: { type: 'string' } }), evolve: (s: S) => s } }, { guard: { mode: 'warn' } }));
    } finally {
      process.emitWarning = original;
    }
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('payload.password is named like a password');
  });
});

describe('the guard before append', () => {
  const signup = defineActor(base({
    SignupCompleted: { schema: { type: 'object', properties: { name: { type: 'string' }, email: { type: 'string' }, bio: { type: 'string' }, extra: { type: 'object' } } }, sensitive: ['email'], evolve: (s: S) => ({ n: s.n + 1 }) },
  }));

  function refusal(payload: Record<string, unknown>): TroupeError {
    try {
      testActor(signup).send('SignUp', payload);
    } catch (e) {
      if (isTroupeError(e)) return e;
      throw e;
    }
    throw new Error('expected a refusal');
  }

  it('refuses a value that looks like personal data in a field not declared sensitive, and never repeats it', () => {
    const e = refusal({ name: 'Ann', bio: 'card 4111 1111 1111 1111' });
    expect(e.code).toBe('SENSITIVE_DATA');
    expect(e.data).toMatchObject({ field: 'payload.bio', rule: 'card-number', eventType: 'SignupCompleted' });
    expect(e.message).not.toContain('4111');
    expect(e.message).toBe('event Signup.SignupCompleted: payload.bio holds what looks like a payment card number (guard pattern card-number); secrets and personal data never go into an event in the clear: declare the field sensitive (encrypted) or hashed, store a reference instead, or list it in guard.allow');
  });

  it('refuses an undeclared field named like a secret', () => {
    expect(refusal({ name: 'Ann', extra: { apiKey: 'x' } }).data).toMatchObject({ field: 'payload.extra.apiKey', rule: 'secret' });
  });

  it('lets personal data through in a sensitive field', () => {
    expect(testActor(signup).send('SignUp', { name: 'Ann', email: 'ann@example.com' })).toHaveLength(1);
  });
});
