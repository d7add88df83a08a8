// The dashboard's server side without a node: its admin rule, its routes, and the series'
// latency quantiles.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDashboard, type DashboardSources } from '../../runtime/ops/dashboard.ts';
import { startHttpServer, type HttpServer } from '../../runtime/ops/http.ts';
import { quantileOf } from '../../runtime/node/series.ts';
import { NotFoundError } from '../../runtime/errors.ts';

function sources(log: string[]): DashboardSources {
  return {
    node: async () => ({ node: 'n1' }),
    series: (since) => ({ samples: [], since }),
    consumers: async () => [],
    dlqList: async (f) => [{ seq: 1, ...f }],
    dlqStats: async () => ({ count: 1 }),
    dlqGet: async (seq) => { if (seq !== 1) throw new NotFoundError(`no dead letter ${seq}`, { sequence: seq }); return { seq }; },
    dlqReplay: async (seq) => { log.push(`replay ${seq}`); },
    dlqDiscard: async (seq) => { log.push(`discard ${seq}`); return seq === 1; },
    actor: async (type, id) => ({ type, id }),
    actors: async (type, resident, limit) => ({ type, resident, limit }),
  };
}

async function serve(adminToken: string | null, log: string[]): Promise<HttpServer> {
  const d = createDashboard(sources(log), adminToken);
  return startHttpServer('127.0.0.1', 0, {
    health: async () => ({ status: 'ok' }), ready: () => ({ ready: true }), metrics: async () => '', extra: (req, res) => d.handle(req, res),
  });
}

describe('the dashboard server', () => {
  const log: string[] = [];
  let admin: HttpServer;
  let readOnly: HttpServer;
  beforeAll(async () => {
    admin = await serve('s3cret', log);
    readOnly = await serve(null, log);
  });
  afterAll(async () => {
    await admin?.close();
    await readOnly?.close();
  });

  it('serves the page with its script and style from the same origin, under a strict CSP', async () => {
    const page = await fetch(`${admin.url}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toContain('text/html');
    expect(page.headers.get('content-security-policy')).toContain("default-src 'self'");
    const html = await page.text();
    expect(html).toContain('<script src="/dashboard.js"');
    expect(html).not.toMatch(/https?:\/\//);
    expect((await fetch(`${admin.url}/dashboard.js`)).headers.get('content-type')).toContain('javascript');
    expect((await fetch(`${admin.url}/dashboard.css`)).headers.get('content-type')).toContain('text/css');
    // The other endpoints still answer.
    expect((await fetch(`${admin.url}/health`)).status).toBe(200);
  });

  it('refuses replay and discard without the admin token, with a wrong one, and on a node without one', async () => {
    const post = (base: string, path: string, auth?: string) => fetch(`${base}${path}`, { method: 'POST', headers: auth === undefined ? {} : { authorization: auth } });
    const none = await post(admin.url, '/api/dlq/1/replay');
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toContain('Bearer');
    expect(await none.json()).toMatchObject({ code: 'UNAUTHENTICATED' });
    expect((await post(admin.url, '/api/dlq/1/replay', 'Bearer s3cre')).status).toBe(403);
    expect((await post(admin.url, '/api/dlq/1/discard', 'Basic s3cret')).status).toBe(401);
    const ro = await post(readOnly.url, '/api/dlq/1/replay', 'Bearer s3cret');
    expect(ro.status).toBe(403);
    expect((await ro.json() as { error: string }).error).toContain('read-only');
    expect(log).toEqual([]);

    expect((await post(admin.url, '/api/dlq/1/replay', 'Bearer s3cret')).status).toBe(200);
    expect((await post(admin.url, '/api/dlq/1/discard', 'bearer s3cret')).status).toBe(200);
    expect((await post(admin.url, '/api/dlq/2/discard', 'Bearer s3cret')).status).toBe(404);
    expect(log).toEqual(['replay 1', 'discard 1', 'discard 2']);
  });

  it('answers the JSON API, with typed errors as status codes', async () => {
    expect(await (await fetch(`${admin.url}/api/node`)).json()).toEqual({ node: 'n1', admin: true });
    expect(await (await fetch(`${readOnly.url}/api/node`)).json()).toEqual({ node: 'n1', admin: false });
    expect(await (await fetch(`${admin.url}/api/dlq?consumer=c&limit=5&after=3`)).json()).toEqual([{ seq: 1, consumer: 'c', limit: 5, afterSeq: 3 }]);
    expect((await fetch(`${admin.url}/api/dlq/7`)).status).toBe(404);
    expect((await fetch(`${admin.url}/api/dlq?limit=0`)).status).toBe(400);
    expect((await fetch(`${admin.url}/api/actor?type=Account`)).status).toBe(400);
    expect(await (await fetch(`${admin.url}/api/actors?type=Account&resident=1`)).json()).toEqual({ type: 'Account', resident: true, limit: 100 });
    expect((await fetch(`${admin.url}/api/nothing`)).status).toBe(404);
    expect((await fetch(`${admin.url}/api/node`, { method: 'DELETE' })).status).toBe(405);
  });
});

describe('quantileOf', () => {
  const bounds = [1, 2, 4];
  it('interpolates inside the bucket that holds the rank, as histogram_quantile does', () => {
    expect(quantileOf([0, 10, 0, 0], bounds, 0.5)).toBeCloseTo(1.5);
    expect(quantileOf([10, 0, 10, 0], bounds, 0.99)).toBeCloseTo(2 + 2 * 0.98);
    expect(quantileOf([0, 0, 0, 3], bounds, 0.5)).toBe(4);
    expect(quantileOf([0, 0, 0, 0], bounds, 0.5)).toBeNull();
  });
});
