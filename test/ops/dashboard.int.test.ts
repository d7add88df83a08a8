// The dashboard as an operator uses it: a real headless Chromium (Debian's `chromium`, driven
// over the DevTools protocol, test/ops/dashboard-browser.ts) against a real node, a real
// nats-server and a real consumer. Screenshots of each view go to TROUPE_DASHBOARD_SCREENSHOTS
// when it names a folder (docs/img/ holds the ones in the README).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actorModules } from '../../actors/index.ts';
import { consume, type Consumer } from '../../runtime/consumers/consume.ts';
import { DeadLetterQueue } from '../../runtime/consumers/dlq.ts';
import { Troupe } from '../../runtime/node/system.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { eventually, freshStream, natsConnect } from '../helpers/troupe.ts';
import { Browser, findChromium, type Page } from './dashboard-browser.ts';

const TOKEN = 'dashboard-admin-token-1';
const INSTALL = 'sudo apt-get install -y chromium (Debian), or set CHROMIUM_PATH to a Chromium binary';

function screenshot(name: string, png: Buffer): void {
  expect(png.subarray(1, 4).toString()).toBe('PNG');
  expect(png.length).toBeGreaterThan(10_000);
  const dir = process.env.TROUPE_DASHBOARD_SCREENSHOTS;
  if (dir === undefined || dir === '') return;
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `dashboard-${name}.png`), png);
}

/** Errors and warnings the page logged (console, uncaught exceptions, failed loads, CSP refusals). */
function problems(page: Page): string[] {
  return page.console.filter((c) => c.level === 'error' || c.level === 'warning').map((c) => `${c.source} ${c.level}: ${c.text}`);
}

describe('the dashboard in headless Chromium', () => {
  const nats = useNatsServer();
  const { stream, subjectPrefix } = freshStream('DASH');
  let node: Troupe;
  let browser: Browser;
  let page: Page;
  let nc: NatsConnection;
  let dlq: DeadLetterQueue;
  let consumer: Consumer | null = null;
  let url: string;

  beforeAll(async () => {
    const chromium = findChromium();
    if (chromium === null) throw new Error(`the dashboard test needs Chromium: ${INSTALL}`);
    node = await Troupe.start({ actors: [...actorModules], servers: nats.url, dataDir: tempDir(), workers: 1, shards: 16, stream, subjectPrefix, httpPort: 0, adminToken: TOKEN });
    url = node.httpUrl!;
    nc = await natsConnect(nats.url);
    dlq = await DeadLetterQueue.open({ nc, stream, subjectPrefix });
    browser = await Browser.launch(chromium);
    page = await browser.newPage();
  }, 60_000);
  afterAll(async () => {
    await consumer?.stop().catch(() => {});
    await browser?.close();
    await dlq?.close();
    await nc?.close();
    await node?.stop();
  });

  it('loads with no console errors, shows the node and its shards, and charts throughput live', async () => {
    await page.goto(`${url}/`);
    await page.waitFor(`document.getElementById('node-name').textContent.includes(${JSON.stringify(node.nodeName)})`, 10_000, 'the node name');
    await page.waitFor(`document.querySelector('#nodes-body tr[data-node=${JSON.stringify(node.nodeName)}]')`, 10_000, 'the node in the nodes table');
    expect(await page.eval(`document.querySelectorAll('#shards .shard').length`)).toBe(16);
    expect(await page.eval(`[...document.querySelectorAll('#shards .shard')].filter((s) => s.dataset.owner === ${JSON.stringify(node.nodeName)}).length`)).toBe(16);
    const before = Number(await page.eval(`document.getElementById('chart-throughput').dataset.total ?? '0'`));
    expect(before).toBe(0);

    // Commands over a few seconds: the chart's samples (one per second, polled every second) show them.
    const sending = (async () => {
      for (let i = 0; i < 30; i++) {
        await Promise.all(Array.from({ length: 10 }, (_, j) => node.send('Account', `dash-${j}`, i === 0 ? 'OpenAccount' : 'Deposit', i === 0 ? {} : { amount: 1 })));
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const total = await page.waitFor<string>(`(() => { const t = Number(document.getElementById('chart-throughput').dataset.total); return t >= 100 ? String(t) : ''; })()`, 20_000, 'commands in the throughput chart');
    await sending;
    expect(Number(total)).toBeGreaterThanOrEqual(100);
    // The line is drawn: a polyline with more than one point.
    expect(await page.eval(`document.querySelector('#chart-throughput polyline[data-series="commands/s"]').getAttribute('points').split(' ').length`)).toBeGreaterThan(1);
    await page.waitFor(`document.getElementById('stat-resident').textContent === '10'`, 10_000, '10 resident actors');
    expect(problems(page)).toEqual([]);
    screenshot('overview', await page.screenshot());
  }, 60_000);

  it('shows a dead letter with its event and reason; the server refuses its replay without the admin token and replays it with it', async () => {
    let broken = true;
    const applied: string[] = [];
    const last = (await (await jetstreamManager(nc)).streams.info(stream)).state.last_seq;
    consumer = await consume({
      nc, stream, subjectPrefix, dataDir: tempDir(), from: { after: last }, name: 'ledger', eventTypes: ['Deposited'], retry: { maxRetries: 0 },
      handler: (e) => { if (broken) throw new Error('read model offline'); applied.push(e.eventId); },
    });
    const { events } = await node.send('Account', 'dash-1', 'Deposit', { amount: 42 });
    await eventually(async () => { if ((await dlq.stats()).count !== 1) throw new Error('not yet'); }, 15_000);

    await page.goto(`${url}/#dlq`);
    await page.waitFor(`document.querySelector('#dlq-body tr[data-seq]')`, 10_000, 'a dead letter row');
    await page.click('#dlq-body tr[data-seq]');
    const shown = await page.waitFor<string>(`!document.getElementById('dlq-detail').hidden && document.getElementById('dlq-event').textContent`, 10_000, 'the dead letter');
    const event = JSON.parse(shown) as { eventId: string; eventType: string; payload: { amount: number } };
    expect(event).toMatchObject({ eventId: events[0]!.eventId, eventType: 'Deposited', payload: { amount: 42 } });
    expect(await page.eval(`document.getElementById('dlq-error').textContent`)).toContain('read model offline');
    expect(await page.eval(`document.getElementById('dlq-seq').textContent`)).toContain('ledger');
    screenshot('dlq', await page.screenshot());

    // No token in the page: the server refuses (not only the page).
    await page.click('#dlq-replay');
    expect(await page.waitFor<string>(`(() => { const t = document.getElementById('dlq-message').textContent; return t.startsWith('refused') ? t : ''; })()`, 10_000, 'a refusal'))
      .toContain('401');
    const seq = (await dlq.list())[0]!.seq;
    const bare = await fetch(`${url}/api/dlq/${seq}/replay`, { method: 'POST' });
    expect(bare.status).toBe(401);
    expect(await bare.json()).toMatchObject({ code: 'UNAUTHENTICATED' });
    const wrong = await fetch(`${url}/api/dlq/${seq}/replay`, { method: 'POST', headers: { authorization: 'Bearer not-the-token' } });
    expect(wrong.status).toBe(403);
    expect((await fetch(`${url}/api/dlq/${seq}/discard`, { method: 'POST', headers: { authorization: 'Bearer not-the-token' } })).status).toBe(403);
    expect((await dlq.stats()).count).toBe(1);
    expect(applied).toEqual([]);

    // With the token, after the fix: replayed once, and the view empties.
    broken = false;
    await page.eval(`(() => { const i = document.getElementById('admin-token'); i.value = ${JSON.stringify(TOKEN)}; i.dispatchEvent(new Event('change')); return true; })()`);
    await page.click('#dlq-replay');
    await page.waitFor(`document.getElementById('dlq-message').textContent.startsWith('replayed')`, 15_000, 'the replay confirmed');
    await page.waitFor(`!document.querySelector('#dlq-body tr[data-seq]') && document.getElementById('dlq-body').textContent.includes('no dead letters')`, 10_000, 'an empty DLQ view');
    expect(applied).toEqual([events[0]!.eventId]);
    expect((await dlq.stats()).count).toBe(0);
  }, 60_000);

  it('lists consumers with their lag and dead letters, and looks up an actor\'s state, version and events', async () => {
    await page.goto(`${url}/#consumers`);
    const row = await page.waitFor<string>(`document.querySelector('#consumers-body tr[data-consumer="ledger"]')?.textContent`, 15_000, 'the ledger consumer');
    expect(row).toContain('consumer');
    screenshot('consumers', await page.screenshot());

    await page.goto(`${url}/#actors`);
    await page.waitFor(`document.getElementById('actor-type').options.length > 0`, 10_000, 'actor types');
    await page.eval(`(() => { document.getElementById('actor-type').value = 'Account'; document.getElementById('actor-id').value = 'dash-1'; return true; })()`);
    await page.click('#actor-go');
    const state = await page.waitFor<string>(`!document.getElementById('actor-result').hidden && document.getElementById('actor-state').textContent`, 10_000, 'the actor');
    const expected = await node.query<{ balance: number }>('Account', 'dash-1');
    expect(JSON.parse(state)).toEqual(expected.state);
    expect(await page.eval(`document.getElementById('actor-version').textContent`)).toBe(String(expected.version));
    expect(await page.eval(`document.querySelectorAll('#actor-events tr').length`)).toBe(Math.min(20, expected.version));
    await page.click('#actor-resident');
    await page.waitFor(`document.querySelectorAll('#actor-ids a').length === 10`, 10_000, 'ten resident ids');
    screenshot('actors', await page.screenshot());
    expect(problems(page).filter((p) => !p.includes('/api/dlq/'))).toEqual([]);
  }, 60_000);
});
