/**
 * Operators' questions to every node at once, over NATS (`troupe stats`, `troupe actors`):
 *
 *   <prefix>.ops.stats    {}                                   → each node's NodeOpsStats
 *   <prefix>.ops.actors   {type, resident, limit}              → each node's actor ids of that type
 *   <prefix>.ops.timers   {type, id}                           → the actor's pending timers, from its shard's owner
 *                                                                (every other node answers SHARD_NOT_OWNED)
 *
 * Every node subscribes without a queue group, so one request reaches all of them; the asker
 * collects the answers for a short window (scatter-gather). NATS rather than each node's HTTP
 * port: the asker needs only the deployment's NATS URL (as every other command does), not a
 * list of node addresses, and nodes whose HTTP port is off still answer. Answers are JSON
 * `{ node, value }` or `{ node, error: WireError }`.
 *
 * This is one of the few files that import `@nats-io/*`.
 */
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { toWire, type WireError } from '../errors.ts';

export interface ActorsRequest {
  type: string;
  resident: boolean;
  limit: number;
}

/** What a node answers; the node implements it (node/console.ts). */
export interface OpsNode {
  readonly nodeName: string;
  opsStats(): Promise<unknown>;
  opsActors(request: ActorsRequest): Promise<unknown>;
  opsTimers(request: TimersRequest): Promise<unknown>;
}

export interface TimersRequest {
  type: string;
  id: string;
}

export interface NodeAnswer<T> {
  node: string;
  value?: T;
  error?: WireError;
}

export type OpsQuestion = 'stats' | 'actors' | 'timers';

export function opsSubject(prefix: string, what: OpsQuestion): string {
  return `${prefix}.ops.${what}`;
}

const text = new TextEncoder();
const untext = new TextDecoder();

/** Answer the ops subjects for `node`; returns the unsubscribe. */
export function serveOps(nc: NatsConnection, prefix: string, node: OpsNode): () => void {
  const subs: Subscription[] = [];
  const serve = (what: OpsQuestion, answer: (body: unknown) => Promise<unknown>) => {
    subs.push(nc.subscribe(opsSubject(prefix, what), {
      callback: (err, msg) => {
        if (err !== null || msg.reply === undefined || msg.reply === '') return;
        void (async () => {
          let out: NodeAnswer<unknown>;
          try {
            const body = msg.data.length === 0 ? {} : JSON.parse(untext.decode(msg.data)) as unknown;
            out = { node: node.nodeName, value: await answer(body) };
          } catch (e) {
            out = { node: node.nodeName, error: toWire(e) };
          }
          try {
            msg.respond(text.encode(JSON.stringify(out)));
          } catch {
            // the connection is closing
          }
        })();
      },
    }));
  };
  serve('stats', () => node.opsStats());
  serve('actors', (body) => {
    const b = body as Partial<ActorsRequest>;
    if (typeof b.type !== 'string' || b.type === '') throw new TypeError('an actors request is {"type": "<actor type>", "resident": bool, "limit": n}');
    const limit = typeof b.limit === 'number' && Number.isInteger(b.limit) && b.limit > 0 ? Math.min(b.limit, 100_000) : 1000;
    return node.opsActors({ type: b.type, resident: b.resident === true, limit });
  });
  serve('timers', (body) => {
    const b = body as Partial<TimersRequest>;
    if (typeof b.type !== 'string' || b.type === '' || typeof b.id !== 'string' || b.id === '') throw new TypeError('a timers request is {"type": "<actor type>", "id": "<actor id>"}');
    return node.opsTimers({ type: b.type, id: b.id });
  });
  return () => {
    for (const s of subs) s.unsubscribe();
  };
}

/**
 * Ask every node and collect what answers within `windowMs` (sorted by node name). An empty
 * list means no node answered.
 */
export async function gatherOps<T>(nc: NatsConnection, prefix: string, what: OpsQuestion, body: unknown, windowMs = 750): Promise<NodeAnswer<T>[]> {
  const out: NodeAnswer<T>[] = [];
  try {
    const replies = await nc.requestMany(opsSubject(prefix, what), text.encode(JSON.stringify(body ?? {})), { strategy: 'timer', maxWait: windowMs });
    for await (const m of replies) {
      try {
        out.push(JSON.parse(untext.decode(m.data)) as NodeAnswer<T>);
      } catch {
        // not an answer of ours
      }
    }
  } catch (e) {
    // No responders: nobody listens on the subject.
    if (!/no responders|503/i.test(String((e as Error)?.message ?? e))) throw e;
  }
  return out.sort((a, b) => a.node.localeCompare(b.node));
}
