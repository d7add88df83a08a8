/**
 * The web dashboard on the node's HTTP port: one page (ops/dashboard-page.ts, shipped as string
 * constants: no build step, no CDN, it works with no internet) and the JSON API it reads.
 *
 *   GET  /                          the page (also /dashboard.js, /dashboard.css)
 *   GET  /api/node                  this node: name, phase, shards, workers, actor types, whether replay is allowed
 *   GET  /api/series?since=<ms>     per-second samples: commands, failed, events, p50, p99, resident, passivations
 *   GET  /api/consumers             consumers of the log: instances, lag, handled/s, DLQ depth
 *   GET  /api/dlq?consumer=&limit=&after=   dead letters, oldest first
 *   GET  /api/dlq/stats             counts by consumer and reason, the oldest one's age
 *   GET  /api/dlq/<seq>             one dead letter: its event, reason, error, attempts
 *   POST /api/dlq/<seq>/replay      admin: run it through its consumer again (a running instance answers)
 *   POST /api/dlq/<seq>/discard     admin: delete it
 *   GET  /api/actor?type=&id=&events=   an actor's state, version and last events
 *   GET  /api/actors?type=&resident=1&limit=   ids of actors of a type (resident ones, or all this node indexed)
 *
 * Read-only unless an admin token is configured (options.adminToken / TROUPE_ADMIN_TOKEN): the
 * POST endpoints answer 403 when none is, 401 without `Authorization: Bearer`, 403 for a wrong
 * one (compared in constant time). Errors are `{ "error": message, "code": code }`.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { DASHBOARD_CSS, DASHBOARD_HTML, DASHBOARD_JS } from './dashboard-page.ts';

/** What the dashboard reads and does; the node implements it (node/console.ts). */
export interface DashboardSources {
  node(): Promise<Record<string, unknown>>;
  series(sinceMs: number): unknown;
  consumers(): Promise<unknown>;
  dlqList(filter: { consumer?: string; limit: number; afterSeq?: number }): Promise<unknown[]>;
  dlqStats(): Promise<unknown>;
  dlqGet(seq: number): Promise<unknown>;
  dlqReplay(seq: number): Promise<void>;
  dlqDiscard(seq: number): Promise<boolean>;
  actor(type: string, id: string, events: number): Promise<unknown>;
  actors(type: string, resident: boolean, limit: number): Promise<unknown>;
}

const STATUS_OF_CODE: Readonly<Record<string, number>> = {
  NOT_FOUND: 404, VALIDATION: 400, MALFORMED_COMMAND: 400, UNKNOWN_ACTOR_TYPE: 400, FORBIDDEN: 403, UNAUTHENTICATED: 401,
  SHARD_NOT_OWNED: 409, JOURNAL_UNAVAILABLE: 503, STOPPED: 503, TIMEOUT: 504,
};

class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly code: string) {
    super(message);
  }
}

function send(res: ServerResponse, status: number, type: string, body: string, extra: Record<string, string> = {}): void {
  res.writeHead(status, {
    'content-type': type, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body),
    'x-content-type-options': 'nosniff', ...extra,
  });
  res.end(body);
}

function json(res: ServerResponse, status: number, body: unknown, extra: Record<string, string> = {}): void {
  send(res, status, 'application/json; charset=utf-8', `${JSON.stringify(body, (_k, v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString('base64') : v))}\n`, extra);
}

const PAGE_HEADERS = {
  // Everything the page needs comes from this server; no inline script, no third party.
  'content-security-policy': "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** The admin check of a mutating request: throws 401/403 with a reason. */
export function checkAdmin(adminToken: string | null, authorization: string | undefined): void {
  if (adminToken === null) {
    throw new HttpError(403, 'the dashboard is read-only: the node has no admin token (set options.adminToken or TROUPE_ADMIN_TOKEN)', 'FORBIDDEN');
  }
  const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
  if (m === null) throw new HttpError(401, 'this action needs the admin token: send Authorization: Bearer <token>', 'UNAUTHENTICATED');
  // Hashes first: equal lengths for timingSafeEqual, and nothing learnt from the token's length.
  if (!timingSafeEqual(digest(m[1]!), digest(adminToken))) throw new HttpError(403, 'the admin token is wrong', 'FORBIDDEN');
}

function intParam(q: URLSearchParams, name: string, fallback: number, min: number, max: number): number {
  const v = q.get(name);
  if (v === null || v === '') return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new HttpError(400, `${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`, 'VALIDATION');
  return n;
}

function required(q: URLSearchParams, name: string): string {
  const v = q.get(name);
  if (v === null || v === '') throw new HttpError(400, `the query parameter ${name} is missing`, 'VALIDATION');
  return v;
}

export interface Dashboard {
  /** Answer the request if it is the dashboard's; false leaves it to the other endpoints. */
  handle(req: IncomingMessage, res: ServerResponse): Promise<boolean>;
}

export function createDashboard(sources: DashboardSources, adminToken: string | null): Dashboard {
  const token = adminToken === null || adminToken === '' ? null : adminToken;

  async function api(method: string, path: string, q: URLSearchParams, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const dl = /^\/api\/dlq\/(\d+)(?:\/(replay|discard))?$/.exec(path);
    if (method === 'POST') {
      req.resume(); // the body is not read: the path says it all
      if (dl === null || dl[2] === undefined) throw new HttpError(405, `POST is only for /api/dlq/<seq>/replay and /api/dlq/<seq>/discard, not ${path}`, 'VALIDATION');
      checkAdmin(token, req.headers.authorization);
      const seq = Number(dl[1]);
      if (dl[2] === 'replay') {
        await sources.dlqReplay(seq);
        return json(res, 200, { replayed: seq });
      }
      if (!await sources.dlqDiscard(seq)) throw new HttpError(404, `no dead letter ${seq}`, 'NOT_FOUND');
      return json(res, 200, { discarded: seq });
    }
    if (dl !== null) {
      if (dl[2] !== undefined) throw new HttpError(405, `${path} takes POST`, 'VALIDATION');
      return json(res, 200, await sources.dlqGet(Number(dl[1])));
    }
    switch (path) {
      case '/api/node':
        return json(res, 200, { ...await sources.node(), admin: token !== null });
      case '/api/series':
        return json(res, 200, sources.series(intParam(q, 'since', 0, 0, Number.MAX_SAFE_INTEGER)));
      case '/api/consumers':
        return json(res, 200, await sources.consumers());
      case '/api/dlq': {
        const consumer = q.get('consumer');
        const after = intParam(q, 'after', 0, 0, Number.MAX_SAFE_INTEGER);
        return json(res, 200, await sources.dlqList({
          limit: intParam(q, 'limit', 100, 1, 1000),
          ...(consumer !== null && consumer !== '' ? { consumer } : {}),
          ...(after > 0 ? { afterSeq: after } : {}),
        }));
      }
      case '/api/dlq/stats':
        return json(res, 200, await sources.dlqStats());
      case '/api/actor':
        return json(res, 200, await sources.actor(required(q, 'type'), required(q, 'id'), intParam(q, 'events', 20, 0, 1000)));
      case '/api/actors':
        return json(res, 200, await sources.actors(required(q, 'type'), q.get('resident') === '1' || q.get('resident') === 'true', intParam(q, 'limit', 100, 1, 10_000)));
      default:
        throw new HttpError(404, `no such endpoint ${path}`, 'NOT_FOUND');
    }
  }

  return {
    async handle(req, res) {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const path = url.pathname;
      const method = req.method ?? 'GET';
      if (path === '/' || path === '/index.html' || path === '/dashboard.js' || path === '/dashboard.css') {
        if (method !== 'GET' && method !== 'HEAD') return false;
        if (path === '/dashboard.js') send(res, 200, 'text/javascript; charset=utf-8', DASHBOARD_JS, PAGE_HEADERS);
        else if (path === '/dashboard.css') send(res, 200, 'text/css; charset=utf-8', DASHBOARD_CSS, PAGE_HEADERS);
        else send(res, 200, 'text/html; charset=utf-8', DASHBOARD_HTML, PAGE_HEADERS);
        return true;
      }
      if (!path.startsWith('/api/')) return false;
      if (method !== 'GET' && method !== 'HEAD' && method !== 'POST') {
        json(res, 405, { error: `${method} is not supported`, code: 'VALIDATION' }, { allow: 'GET, HEAD, POST' });
        return true;
      }
      try {
        await api(method, path, url.searchParams, req, res);
      } catch (e) {
        if (res.headersSent) {
          res.destroy();
          return true;
        }
        const code = (e as { code?: unknown })?.code;
        const status = e instanceof HttpError ? e.status : (typeof code === 'string' ? STATUS_OF_CODE[code] : undefined) ?? 500;
        const extra: Record<string, string> = status === 401 ? { 'www-authenticate': 'Bearer realm="troupe"' } : {};
        json(res, status, { error: (e as Error)?.message ?? String(e), code: typeof code === 'string' ? code : 'INTERNAL' }, extra);
      }
      return true;
    },
  };
}
