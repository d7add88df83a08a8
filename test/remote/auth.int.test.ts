// Verified callers and authorize rules, end to end: TroupeClient with signed tokens → a node
// with options.auth and options.authorize → the log. Nothing refused is appended.
import { generateKeyPairSync } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TroupeClient } from '../../runtime/remote/client.ts';
import { isTroupeError } from '../../runtime/errors.ts';
import type { Troupe } from '../../runtime/node/system.ts';
import { useNatsServer } from '../helpers/nats.ts';
import { freshStream, readEvents, startNode } from '../helpers/troupe.ts';

const vaultModule = fileURLToPath(new URL('../fixtures/vault.ts', import.meta.url));
const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const forger = generateKeyPairSync('ec', { namedCurve: 'P-256' });

function token(sub: string, roles: string[], opts: { tenant?: string; exp?: number | string; key?: typeof privateKey } = {}): Promise<string> {
  return new SignJWT({ roles, ...(opts.tenant === undefined ? {} : { tenant: opts.tenant }) })
    .setProtectedHeader({ alg: 'ES256' }).setSubject(sub).setIssuer('test-idp').setIssuedAt()
    .setExpirationTime(opts.exp ?? '10m').sign(opts.key ?? privateKey);
}

/** The error a promise rejects with (fails the test if it resolves). */
async function refusal(p: Promise<unknown>): Promise<Error & { code: string; retryable: boolean; data: Record<string, unknown> }> {
  const r = await p.then((v) => ({ ok: v }), (e: unknown) => ({ e }));
  if ('ok' in r) throw new Error(`expected a refusal, got ${JSON.stringify(r.ok)}`);
  return r.e as never;
}

describe('authenticated and authorized commands', () => {
  const nats = useNatsServer();
  const { stream, subjectPrefix } = freshStream('AUTH');
  let node: Troupe;
  let alice: TroupeClient;
  let anonymous: TroupeClient;
  const tokens: Record<string, string> = {};
  const ids = (events: { aggregateId: string }[]) => new Set(events.map((e) => e.aggregateId));

  beforeAll(async () => {
    node = await startNode(nats.url, {
      actors: [vaultModule], stream, subjectPrefix, workers: 1, shards: 4,
      auth: { publicKey: publicKey.export({ type: 'spki', format: 'pem' }) as string, issuer: 'test-idp' },
      // The node's own rule: a suspended tenant does nothing.
      authorize: (principal) => principal?.tenant !== 'suspended',
    });
    tokens.alice = await token('alice', ['customer']);
    tokens.bob = await token('bob', ['customer']);
    tokens.guest = await token('gus', ['guest']);
    tokens.teller = await token('tina', ['teller']);
    tokens.suspended = await token('sam', ['customer'], { tenant: 'suspended' });
    alice = await TroupeClient.connect({ servers: nats.url, subjectPrefix, timeoutMs: 20_000, token: tokens.alice });
    anonymous = await TroupeClient.connect({ servers: nats.url, subjectPrefix, timeoutMs: 20_000 });
  });
  afterAll(async () => {
    await alice?.close();
    await anonymous?.close();
    await node?.stop();
  });

  it('stores the verified principal id as userId, not the userId the command claims', async () => {
    await alice.send('Vault', 'v1', 'OpenVault', {}, { userId: 'mallory' });
    await alice.send('Vault', 'v1', { type: 'Deposit', payload: { amount: 10 }, userId: 'mallory' });
    const events = (await readEvents(nats.url, stream)).filter((e) => e.aggregateId === 'v1');
    expect(events.map((e) => [e.eventType, e.userId])).toEqual([['VaultOpened', 'alice'], ['Deposited', 'alice']]);
    expect(events[0]!.payload).toEqual({ owner: 'alice' });
    expect(await alice.query('Vault', 'v1')).toEqual({ state: { owner: 'alice', balance: 10 }, version: 2 });
  });

  it('refuses a missing, expired or badly signed token with UNAUTHENTICATED, and appends nothing', async () => {
    const expired = await token('alice', ['customer'], { exp: Math.floor(Date.now() / 1000) - 120 });
    const forged = await token('alice', ['customer'], { key: forger.privateKey });
    const cases: [string, () => Promise<unknown>, RegExp][] = [
      ['missing', () => anonymous.send('Vault', 'u-missing', 'OpenVault', {}), /requires a signed token/],
      ['expired', () => anonymous.send('Vault', 'u-expired', 'OpenVault', {}, { token: expired }), /has expired/],
      ['forged', () => anonymous.send('Vault', 'u-forged', 'OpenVault', {}, { token: forged }), /signature does not verify/],
      ['garbage', () => anonymous.send('Vault', 'u-garbage', 'OpenVault', {}, { token: 'x.y.z' }), /not a well-formed/],
    ];
    for (const [what, send, why] of cases) {
      const e = await refusal(send());
      expect(e.code, what).toBe('UNAUTHENTICATED');
      expect(e.retryable, what).toBe(false);
      expect(e.message, what).toMatch(why);
      expect(e.data.commandId, what).toEqual(expect.any(String));
    }
    // Reads need a token too.
    expect((await refusal(anonymous.query('Vault', 'v1'))).code).toBe('UNAUTHENTICATED');
    expect((await refusal(anonymous.history('Vault', 'v1', { token: expired }))).code).toBe('UNAUTHENTICATED');
    const stored = ids(await readEvents(nats.url, stream));
    for (const id of ['u-missing', 'u-expired', 'u-forged', 'u-garbage']) expect(stored.has(id), id).toBe(false);
  });

  it('refuses a role rule with FORBIDDEN and appends nothing', async () => {
    const before = (await readEvents(nats.url, stream)).length;
    const guest = await refusal(anonymous.send('Vault', 'v1', 'Deposit', { amount: 99 }, { token: tokens.guest }));
    expect(guest.code).toBe('FORBIDDEN');
    expect(guest.retryable).toBe(false);
    expect(guest.message).toBe('principal "gus" may not send Deposit to Vault v1: Vault allows roles customer, teller; the principal has guest');
    const freeze = await refusal(alice.send('Vault', 'v1', 'FreezeVault', {}));
    expect(freeze.message).toContain('Vault.FreezeVault allows roles teller; the principal has customer');
    // The teller may.
    await anonymous.send('Vault', 'v1', 'FreezeVault', {}, { token: tokens.teller });
    const after = await readEvents(nats.url, stream);
    expect(after.length).toBe(before + 1);
    expect(after.at(-1)).toMatchObject({ eventType: 'VaultFrozen', userId: 'tina' });
  });

  it('judges a state-based rule on the actor\'s state: only the owner withdraws', async () => {
    const before = (await readEvents(nats.url, stream)).length;
    const e = await refusal(anonymous.send('Vault', 'v1', 'Withdraw', { amount: 1 }, { token: tokens.bob }));
    expect(e.code).toBe('FORBIDDEN');
    expect(e.message).toBe('principal "bob" may not send Withdraw to Vault v1: refused by the authorize rule of Vault.Withdraw');
    expect(e.data).toMatchObject({ principalId: 'bob', aggregateId: 'v1', commandType: 'Withdraw' });
    expect((await readEvents(nats.url, stream)).length).toBe(before);
    // Right after bob's refusal, in the same batch as another command: the owner is not refused.
    const [mine, theirs] = await Promise.allSettled([
      alice.send('Vault', 'v1', 'Withdraw', { amount: 4 }),
      anonymous.send('Vault', 'v1', 'Withdraw', { amount: 4 }, { token: tokens.bob }),
    ]);
    expect(mine.status).toBe('fulfilled');
    expect(theirs.status === 'rejected' && isTroupeError(theirs.reason, 'FORBIDDEN')).toBe(true);
    expect(await alice.query('Vault', 'v1')).toMatchObject({ state: { balance: 6 } });
  });

  it('applies the node\'s authorize rule at the door, and the actor\'s rule to queries and history', async () => {
    const e = await refusal(anonymous.send('Vault', 'v1', 'Deposit', { amount: 1 }, { token: tokens.suspended }));
    expect(e.code).toBe('FORBIDDEN');
    expect(e.message).toContain('refused by the node\'s authorize rule');
    expect((await refusal(anonymous.query('Vault', 'v1', { token: tokens.suspended }))).code).toBe('FORBIDDEN');
    const q = await refusal(anonymous.query('Vault', 'v1', { token: tokens.guest }));
    expect(q.code).toBe('FORBIDDEN');
    expect(q.message).toContain('principal "gus" may not read the query of Vault v1');
    expect((await refusal(anonymous.history('Vault', 'v1', { token: tokens.guest }))).code).toBe('FORBIDDEN');
    expect((await anonymous.history('Vault', 'v1', { token: tokens.bob })).length).toBeGreaterThan(0);
  });

  it('takes the principal of an in-process caller as given, and refuses one without a principal', async () => {
    const r = await node.send('Vault', 'v2', 'OpenVault', {}, { principal: { id: 'ivan', roles: ['customer'] }, userId: 'mallory' });
    expect(r.version).toBe(1);
    const events = (await node.history('Vault', 'v2', { principal: { id: 'ivan', roles: ['customer'] } }));
    expect(events.map((ev) => ev.userId)).toEqual(['ivan']);
    expect((await refusal(node.send('Vault', 'v2', 'Deposit', { amount: 1 }))).code).toBe('FORBIDDEN');
    expect((await refusal(node.query('Vault', 'v2'))).code).toBe('FORBIDDEN');
  });

  it('counts refusals in /metrics: forbidden by kind, and unauthenticated among the failures', async () => {
    const text = await node.metrics();
    const count = (re: RegExp) => Number(re.exec(text)?.[1] ?? 'NaN');
    // Forbidden commands so far: gus, alice's freeze, bob twice, the suspended tenant, the in-process one without a principal.
    expect(count(/^troupe_requests_forbidden_total\{kind="command"\} (\d+)$/m)).toBe(6);
    expect(count(/^troupe_requests_forbidden_total\{kind="query"\} (\d+)$/m)).toBe(3);
    expect(count(/^troupe_requests_forbidden_total\{kind="history"\} (\d+)$/m)).toBe(1);
    expect(count(/^troupe_command_failures_total\{reason="UNAUTHENTICATED"\} (\d+)$/m)).toBe(4);
  });
});

describe('rate limits per principal', () => {
  const nats = useNatsServer();
  const { stream, subjectPrefix } = freshStream('RATE');
  let node: Troupe;
  let flood: TroupeClient;
  let calm: TroupeClient;

  beforeAll(async () => {
    node = await startNode(nats.url, {
      actors: [vaultModule], stream, subjectPrefix, workers: 1, shards: 4,
      auth: { publicKey: publicKey.export({ type: 'spki', format: 'pem' }) as string, issuer: 'test-idp' },
      rateLimits: { perPrincipal: { perSecond: 20, burst: 20 } },
    });
    // Without the client's retry, so that the node's refusals reach the test.
    flood = await TroupeClient.connect({ servers: nats.url, subjectPrefix, timeoutMs: 20_000, retry: false, token: await token('flood', ['customer']) });
    calm = await TroupeClient.connect({ servers: nats.url, subjectPrefix, timeoutMs: 20_000, token: await token('calm', ['customer']) });
  });
  afterAll(async () => {
    await flood?.close();
    await calm?.close();
    await node?.stop();
  });

  it('refuses a flooding principal beyond its bucket with RATE_LIMITED while another principal is served', async () => {
    await flood.send('Vault', 'f1', 'OpenVault', {});
    await calm.send('Vault', 'c1', 'OpenVault', {});
    const flooded = await Promise.allSettled(Array.from({ length: 200 }, () => flood.send('Vault', 'f1', 'Deposit', { amount: 1 })));
    const served = await Promise.allSettled(Array.from({ length: 10 }, () => calm.send('Vault', 'c1', 'Deposit', { amount: 1 })));
    const limited = flooded.filter((r) => r.status === 'rejected' && isTroupeError(r.reason, 'RATE_LIMITED'));
    const ok = flooded.filter((r) => r.status === 'fulfilled').length;
    expect(ok + limited.length).toBe(200);
    expect(ok).toBeGreaterThanOrEqual(19);
    expect(ok).toBeLessThan(60);
    const first = (limited[0] as PromiseRejectedResult).reason as { retryable: boolean; data: { retryAfterMs: number } };
    expect(first.retryable).toBe(true);
    expect(first.data.retryAfterMs).toBeGreaterThan(0);
    expect(served.every((r) => r.status === 'fulfilled')).toBe(true);
    // Nothing of a limited command was appended.
    expect((await calm.query('Vault', 'c1')).state).toMatchObject({ balance: 10 });
    expect((await flood.query('Vault', 'f1')).state).toMatchObject({ balance: ok });
  });

  it('lets TroupeClient\'s retry wait out RATE_LIMITED, as data.retryAfterMs asks, until every command is stored once', async () => {
    const patient = await TroupeClient.connect({ servers: nats.url, subjectPrefix, timeoutMs: 20_000, token: await token('patient', ['customer']) });
    try {
      await patient.send('Vault', 'p1', 'OpenVault', {});
      const sent = await Promise.allSettled(Array.from({ length: 40 }, () => patient.send('Vault', 'p1', 'Deposit', { amount: 1 })));
      expect(sent.filter((r) => r.status === 'rejected')).toEqual([]);
      expect((await patient.query('Vault', 'p1')).state).toMatchObject({ balance: 40 });
      const events = await patient.history('Vault', 'p1');
      expect(events.length).toBe(41);
    } finally {
      await patient.close();
    }
  });
});
