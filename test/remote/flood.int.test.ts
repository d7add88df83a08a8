// A flooding client against a node with rate limits per principal: the flood is limited to its
// budget, and another principal's latency stays near what it is without the flood. The flooder
// is another process (test/fixtures/flood-client.ts) with its own NATS connection; the calm
// client sends at a steady pace from this process, and its p99 is compared with its own p99
// measured just before, without the flood: a ratio, not a time.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TroupeClient } from '../../runtime/remote/client.ts';
import type { Troupe } from '../../runtime/node/system.ts';
import { REPO_ROOT, useNatsServer } from '../helpers/nats.ts';
import { freshStream, startNode } from '../helpers/troupe.ts';

const vaultModule = fileURLToPath(new URL('../fixtures/vault.ts', import.meta.url));
const floodScript = join(REPO_ROOT, 'test', 'fixtures', 'flood-client.ts');
const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Every principal's budget. */
const PER_SECOND = 300;
const BURST = 300;
/** The calm client's pace: one command every PACE_MS (200/s, within its budget), SAMPLES of them per phase. */
const PACE_MS = 5;
const SAMPLES = 500;

function token(sub: string): Promise<string> {
  return new SignJWT({ roles: ['customer'] }).setProtectedHeader({ alg: 'ES256' }).setSubject(sub).setIssuer('test-idp')
    .setIssuedAt().setExpirationTime('10m').sign(privateKey);
}

/** The p-th percentile (0..1) of `values`. */
function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)]!;
}

/**
 * SAMPLES commands sent at a fixed pace (open loop: a slow answer does not delay the next
 * send, so a stall shows in the latencies instead of hiding between them). Returns each
 * command's latency in ms; any failure fails the test.
 */
async function paced(client: TroupeClient, vaults: readonly string[]): Promise<number[]> {
  const latencies: number[] = [];
  const pending: Promise<void>[] = [];
  const start = performance.now();
  for (let i = 0; i < SAMPLES; i++) {
    const due = start + i * PACE_MS;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    const t0 = performance.now();
    pending.push(client.send('Vault', vaults[i % vaults.length]!, 'Deposit', { amount: 1 }).then(() => { latencies.push(performance.now() - t0); }));
  }
  await Promise.all(pending);
  return latencies;
}

describe('rate limits under a flood', () => {
  const nats = useNatsServer();
  const { stream, subjectPrefix } = freshStream('FLOOD');
  let node: Troupe;
  let calm: TroupeClient;
  let flooder: ChildProcessWithoutNullStreams | null = null;
  const calmVaults = Array.from({ length: 8 }, (_, i) => `calm-${i}`);

  beforeAll(async () => {
    node = await startNode(nats.url, {
      actors: [vaultModule], stream, subjectPrefix, workers: 2, shards: 16,
      auth: { publicKey: publicKey.export({ type: 'spki', format: 'pem' }) as string, issuer: 'test-idp' },
      rateLimits: { perPrincipal: { perSecond: PER_SECOND, burst: BURST } },
    });
    calm = await TroupeClient.connect({ servers: nats.url, subjectPrefix, timeoutMs: 20_000, retry: false, token: await token('calm') });
    for (const v of calmVaults) await calm.send('Vault', v, 'OpenVault', {});
  });
  afterAll(async () => {
    if (flooder !== null && flooder.exitCode === null) flooder.kill('SIGKILL');
    await calm?.close();
    await node?.stop();
  });

  it('limits a flooding principal to its budget while another principal\'s p99 stays within 2x of its unloaded value', async () => {
    // The flooder starts first (loading TypeScript is heavy) and waits for `go`.
    const child = flooder = spawn(process.execPath, ['--import', 'tsx', floodScript, nats.url, subjectPrefix, '512'], {
      cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, TROUPE_TOKEN: await token('flood') },
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    for (const until = Date.now() + 30_000; !/^ready$/m.test(out);) {
      if (Date.now() > until || child.exitCode !== null) throw new Error(`the flooding client did not start:\n${out}`);
      await sleep(25);
    }

    // Warm up (JIT, connections), then the calm client alone.
    await paced(calm, calmVaults);
    const aloneL = await paced(calm, calmVaults);
    const alone = percentile(aloneL, 0.99);

    // The same, while the other process floods.
    const floodMs = SAMPLES * PACE_MS + 1_500;
    child.stdin.write(`go ${floodMs}\n`);
    await sleep(500);
    const floodedL = await paced(calm, calmVaults);
    const flooded = percentile(floodedL, 0.99);
    await exited;
    const result = JSON.parse(out.trim().split('\n').pop()!) as { sent: number; ok: number; limited: number; other: number; ms: number; firstOther: string | null };

    const ratio = flooded / alone;
    console.log(`flood: calm p99 alone ${alone.toFixed(2)} ms, under flood ${flooded.toFixed(2)} ms, ratio ${ratio.toFixed(2)}; flooder sent ${result.sent} in ${result.ms} ms (${Math.round(result.sent / result.ms * 1000)}/s), ${result.ok} accepted (${Math.round(result.ok / result.ms * 1000)}/s), ${result.limited} RATE_LIMITED`);

    // The flooder was limited: nothing but acceptances and RATE_LIMITED, accepted at about its budget.
    expect(result.firstOther).toBeNull();
    expect(result.other).toBe(0);
    expect(result.limited).toBeGreaterThan(result.ok);
    const budget = BURST + PER_SECOND * result.ms / 1000;
    expect(result.ok).toBeLessThanOrEqual(budget * 1.05);
    expect(result.ok).toBeGreaterThanOrEqual(budget * 0.8);
    // The calm principal kept its latency.
    expect(ratio).toBeLessThanOrEqual(2);
  });
});
