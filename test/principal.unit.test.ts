import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT, exportJWK } from 'jose';
import { describe, expect, it } from 'vitest';
import { defineActor } from '../runtime/define.ts';
import { isTroupeError } from '../runtime/errors.ts';
import { reject } from '../runtime/errors.ts';
import { given, testActor } from '../runtime/testing/index.ts';
import { TokenVerifier } from '../runtime/token.ts';

interface Account { owner: string | null; balance: number }

const account = defineActor<Account>({
  type: 'SecuredAccount',
  initialState: () => ({ owner: null, balance: 0 }),
  authorize: { roles: ['customer', 'teller'] },
  commands: {
    Open: (s, c: { owner: string }) => (s.owner !== null ? reject('already-open') : { type: 'Opened', payload: { owner: c.owner } }),
    Deposit: (_s, c: { amount: number }) => ({ type: 'Deposited', payload: { amount: c.amount } }),
    Withdraw: {
      // Only the owner withdraws: a rule on the state, judged before decide.
      authorize: (principal, _command, ctx) => (ctx.state as Account).owner === principal.id,
      decide: (s, c: { amount: number }) => (s.balance < c.amount ? reject('insufficient-funds') : { type: 'Withdrawn', payload: { amount: c.amount } }),
    },
    Freeze: { authorize: { roles: ['teller'] }, decide: () => ({ type: 'Frozen', payload: {} }) },
  },
  events: {
    Opened: (s, e: { owner: string }) => ({ ...s, owner: e.owner }),
    Deposited: (s, e: { amount: number }) => ({ ...s, balance: s.balance + e.amount }),
    Withdrawn: (s, e: { amount: number }) => ({ ...s, balance: s.balance - e.amount }),
    Frozen: (s) => s,
  },
});

const alice = { id: 'alice', roles: ['customer'] };
const bob = { id: 'bob', roles: ['customer'] };
const teller = { id: 'tina', roles: ['teller'] };
const opened = [{ type: 'Opened', payload: { owner: 'alice' } }, { type: 'Deposited', payload: { amount: 10 } }];

describe('defineActor authorize', () => {
  it('refuses an authorize spec that is neither roles nor a function, naming the fix', () => {
    const base = { type: 'Bad', initialState: () => ({}), events: { Happened: (s: object) => s } };
    expect(() => defineActor({ ...base, authorize: { roles: [] }, commands: { Do: () => undefined } } as never)).toThrow(/Bad: Bad: authorize must be \{ roles: \['role', \.\.\.\] \}/);
    expect(() => defineActor({ ...base, authorize: 'admin', commands: { Do: () => undefined } } as never)).toThrow(/authorize must be/);
    expect(() => defineActor({ ...base, commands: { Do: { decide: () => undefined, authorize: { roles: [''] } } } } as never)).toThrow(/Bad\.Do: authorize must be/);
    expect(() => defineActor({ ...base, authorize: { roles: 'admin' }, commands: { Do: () => undefined } } as never)).toThrow(expect.objectContaining({ code: 'INVALID_DEFINITION' }));
  });

  it('compiles no rule for an actor that declares none (the hot path takes one branch)', () => {
    const open = defineActor({ type: 'Open', initialState: () => ({}), commands: { Do: () => undefined }, events: { Done: (s: object) => s } });
    expect(open.authorize).toBeNull();
    expect(open.commands.get('Do')!.authorize).toBeNull();
    expect(account.commands.get('Withdraw')!.authorize!.map((r) => r.source)).toEqual(['SecuredAccount', 'SecuredAccount.Withdraw']);
  });
});

describe('test kit .as(principal)', () => {
  it('runs a command whose principal has an allowed role, with the principal id as userId', () => {
    let seen: unknown;
    const echo = defineActor({
      type: 'Echo', initialState: () => ({}), authorize: { roles: ['r'] },
      commands: { Say: (_s, _c, ctx) => { seen = [ctx.userId, ctx.principal]; return { type: 'Said', payload: {} }; } },
      events: { Said: (s: object) => s },
    });
    given(echo).as({ id: 'p1', roles: ['r'] }).when('Say', {}).then([{ type: 'Said', payload: {} }]);
    expect(seen).toEqual(['p1', { id: 'p1', roles: ['r'] }]);
  });

  it('refuses a principal without an allowed role with FORBIDDEN, naming the rule and never the payload', () => {
    const e = given(account, opened).as({ id: 'mallory', roles: ['guest'] }).when('Deposit', { amount: 777 }).thenRejects('FORBIDDEN');
    expect(e.message).toBe('principal "mallory" may not send Deposit to SecuredAccount securedaccount-1: SecuredAccount allows roles customer, teller; the principal has guest');
    expect(e.message).not.toContain('777');
    expect(e.retryable).toBe(false);
    expect(e.data).toMatchObject({ principalId: 'mallory', commandType: 'Deposit', aggregateType: 'SecuredAccount' });
  });

  it('refuses a command sent without a principal when a rule applies', () => {
    const e = given(account, opened).when('Deposit', { amount: 1 }).thenRejects('FORBIDDEN');
    expect(e.message).toContain('an anonymous caller may not send Deposit');
    expect(e.message).toContain('requires an authenticated principal');
  });

  it('judges a state-based rule on the current state: only the owner withdraws', () => {
    given(account, opened).as(alice).when('Withdraw', { amount: 5 }).then([{ type: 'Withdrawn', payload: { amount: 5 } }]);
    const e = given(account, opened).as(bob).when('Withdraw', { amount: 5 }).thenRejects('FORBIDDEN');
    expect(e.message).toBe('principal "bob" may not send Withdraw to SecuredAccount securedaccount-1: refused by the authorize rule of SecuredAccount.Withdraw');
    // The rule runs before decide: the owner still meets the business rule.
    given(account, opened).as(alice).when('Withdraw', { amount: 50 }).thenRejects('insufficient-funds');
  });

  it('requires both the actor rule and the command rule', () => {
    given(account, opened).as(teller).when('Freeze').then([{ type: 'Frozen', payload: {} }]);
    expect(given(account, opened).as(alice).when('Freeze').thenRejects('FORBIDDEN').message).toContain('SecuredAccount.Freeze allows roles teller');
    // A teller passes the actor's rule, but the state rule of Withdraw refuses anyone but the owner.
    given(account, opened).as(teller).when('Withdraw', { amount: 1 }).thenRejects('FORBIDDEN');
  });

  it('refuses when a rule function throws, and when it returns anything but true', () => {
    const odd = defineActor({
      type: 'Odd', initialState: () => ({}),
      commands: {
        Boom: { authorize: () => { throw new Error('rule bug'); }, decide: () => ({ type: 'Boomed', payload: {} }) },
        Truthy: { authorize: (() => 1) as never, decide: () => ({ type: 'Boomed', payload: {} }) },
      },
      events: { Boomed: (s: object) => s },
    });
    expect(given(odd).as(alice).when('Boom').thenRejects('FORBIDDEN').message).toContain('the authorize rule of Odd.Boom threw (rule bug)');
    given(odd).as(alice).when('Truthy').thenRejects('FORBIDDEN');
  });

  it('testActor sends as a principal until told otherwise', () => {
    const a = testActor(account).as(alice);
    a.send('Open', { owner: 'alice' });
    a.send('Deposit', { amount: 3 });
    a.as(bob);
    expect(() => a.send('Withdraw', { amount: 1 })).toThrow(expect.objectContaining({ code: 'FORBIDDEN' }));
    a.as(alice).send('Withdraw', { amount: 1 });
    expect(a.state.balance).toBe(2);
    a.as(null);
    expect(() => a.send('Deposit', { amount: 1 })).toThrow(expect.objectContaining({ code: 'FORBIDDEN' }));
  });

  it('refuses a malformed principal', () => {
    expect(() => given(account).as({ id: '', roles: [] })).toThrow(/a principal is \{ id: string/);
    expect(() => given(account).as({ id: 'x', roles: 'admin' } as never)).toThrow(/roles must be an array of strings/);
  });
});

describe('TokenVerifier', () => {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pem = publicKey.export({ type: 'spki', format: 'pem' }) as string;
  const sign = (claims: Record<string, unknown>, key = privateKey, exp: string | number = '5m') =>
    new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuedAt().setExpirationTime(exp).setIssuer('idp').sign(key);

  it('maps a valid token to { id: sub, roles, tenant }', async () => {
    const v = TokenVerifier.create({ publicKey: pem, issuer: 'idp' });
    expect(await v.verify(await sign({ sub: 'alice', roles: ['customer'], tenant: 't1' }))).toEqual({ id: 'alice', roles: ['customer'], tenant: 't1' });
    expect(await v.verify(await sign({ sub: 'bob', roles: 'a b' }))).toEqual({ id: 'bob', roles: ['a', 'b'] });
  });

  it('refuses a missing, expired, badly signed or wrong-issuer token with UNAUTHENTICATED, naming no part of it', async () => {
    const v = TokenVerifier.create({ publicKey: pem, issuer: 'idp' });
    const cases: [string | null, RegExp][] = [
      [null, /requires a signed token/],
      [await sign({ sub: 'a' }, privateKey, Math.floor(Date.now() / 1000) - 60), /has expired/],
      [await sign({ sub: 'a' }, other.privateKey), /signature does not verify/],
      [await new SignJWT({ sub: 'a' }).setProtectedHeader({ alg: 'ES256' }).setExpirationTime('5m').setIssuer('evil').sign(privateKey), /claim check failed.*iss/],
      ['not.a.jwt', /not a well-formed signed JWT/],
      [await sign({ roles: ['x'] }), /names no principal/],
    ];
    for (const [token, why] of cases) {
      const e = await v.verify(token).then(() => null, (err: unknown) => err);
      expect(isTroupeError(e, 'UNAUTHENTICATED'), String(token)).toBe(true);
      expect((e as Error).message).toMatch(why);
      if (token !== null) expect((e as Error).message).not.toContain(token);
    }
  });

  it('lets a request without a token through as no one when auth is not required', async () => {
    expect(await TokenVerifier.create({ publicKey: pem, required: false }).verify(null)).toBeNull();
  });

  it('verifies with a JWKS file and a custom claims mapping', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'troupe-jwks-'));
    const file = join(dir, 'jwks.json');
    writeFileSync(file, JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' }] }));
    const v = TokenVerifier.create({ jwksFile: file, principal: (c) => ({ id: `user:${String(c.sub)}`, roles: ['r'] }) });
    expect(await v.verify(await sign({ sub: 'alice' }))).toEqual({ id: 'user:alice', roles: ['r'] });
    writeFileSync(file, JSON.stringify({ keys: [await exportJWK(privateKey)] }));
    expect(() => TokenVerifier.create({ jwksFile: file })).toThrow(/holds a private or secret key/);
  });

  it('refuses options without exactly one key source, or with a private key', () => {
    expect(() => TokenVerifier.create({})).toThrow(/exactly one of publicKey/);
    expect(() => TokenVerifier.create({ publicKey: 'nope' })).toThrow(/not a public key in PEM form/);
    expect(() => TokenVerifier.create({ publicKey: privateKey })).toThrow(/must be a public key, got a private key/);
  });
});
