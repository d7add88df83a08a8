/**
 * The node's HTTP server for operators: liveness with each check, readiness, Prometheus metrics.
 *
 *   GET /health   200 {"status":"ok",...} or 503 {"status":"fail",...}: every check with its detail
 *   GET /ready    200 while the node takes commands; 503 while it starts, stops or lacks a worker
 *   GET /metrics  Prometheus text format (ops/prometheus.ts renders it)
 *   GET /cluster  JSON: the cluster's nodes (state, version, shards), leases with their ages, moves
 *
 * It listens on 127.0.0.1 unless told otherwise: these endpoints are for a local agent or a
 * scraper, not for the internet. node:http only; no framework.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface HealthReport {
  status: 'ok' | 'fail';
  [key: string]: unknown;
}

export interface OpsEndpoints {
  health(): Promise<HealthReport>;
  ready(): { ready: boolean; [key: string]: unknown };
  metrics(): Promise<string>;
  /** GET /cluster (absent: 404). */
  cluster?(): Promise<unknown>;
  /** Asked first for every request (the dashboard, ops/dashboard.ts): true when it answered. */
  extra?(req: IncomingMessage, res: ServerResponse): Promise<boolean>;
}

export interface HttpServer {
  /** `http://host:port` */
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body, null, 2)}\n`;
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function route(endpoints: OpsEndpoints, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (endpoints.extra !== undefined && await endpoints.extra(req, res)) return;
  const path = (req.url ?? '/').split('?')[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD' });
    res.end();
    return;
  }
  switch (path) {
    case '/health': {
      const report = await endpoints.health();
      json(res, report.status === 'ok' ? 200 : 503, report);
      return;
    }
    case '/ready': {
      const r = endpoints.ready();
      json(res, r.ready ? 200 : 503, r);
      return;
    }
    case '/metrics': {
      const text = await endpoints.metrics();
      res.writeHead(200, { 'content-type': PROMETHEUS_CONTENT_TYPE, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text) });
      res.end(text);
      return;
    }
    case '/cluster':
      if (endpoints.cluster !== undefined) {
        json(res, 200, await endpoints.cluster());
        return;
      }
      json(res, 404, { error: 'this server has no cluster view' });
      return;
    default:
      json(res, 404, { error: `no such endpoint ${path}; try /health, /ready, /metrics or /cluster` });
  }
}

/** Listen on host:port (0 = any free port). Rejects when the port is taken, naming it. */
export async function startHttpServer(host: string, port: number, endpoints: OpsEndpoints): Promise<HttpServer> {
  const server: Server = createServer((req, res) => {
    route(endpoints, req, res).catch((e: unknown) => {
      if (!res.headersSent) json(res, 500, { error: (e as Error)?.message ?? String(e) });
      else res.destroy();
    });
  });
  // A scraper's keep-alive connection must not hold the node open when it stops.
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch((e: NodeJS.ErrnoException) => {
    throw new Error(`the HTTP server cannot listen on ${host}:${port} (${e.code ?? e.message}); choose another with options.httpPort or TROUPE_HTTP_PORT, or 0 for any free port`, { cause: e });
  });
  server.unref();
  const addr = server.address() as AddressInfo;
  const shown = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    url: `http://${shown}:${addr.port}`,
    port: addr.port,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}
