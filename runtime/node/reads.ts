/**
 * Reads served by a shard's owner: an actor's committed state (activating it if needed), and
 * its history from the log through the LMDB history index.
 */
import type { EventEnvelope } from '../journal/codec.ts';
import { decodeCommits } from '../journal/codec.ts';
import { readCommit } from '../contracts/contract.ts';
import { COMMIT } from '../wire.ts';
import { ActorCell } from './cell.ts';
import { activate, messagesAt } from './activation.ts';
import type { ShardHost } from './shard.ts';
import { checkRules, type Principal, type RequestKind } from '../principal.ts';

/**
 * The committed state and version of an actor (activating it if needed). When the actor type
 * declares `authorize`, `principal` must pass it (as `query`), judged on that state.
 */
export async function queryActor(host: ShardHost, type: string, id: string, principal: Principal | null = null, kind: RequestKind = 'query'): Promise<{ state: unknown; version: number }> {
  const read = await committedState(host, type, id);
  const rule = host.ctx.registry.get(type)?.def.authorize ?? null;
  if (rule !== null) {
    const refused = checkRules([rule], principal, { kind, type: kind, aggregateType: type, aggregateId: id, payload: undefined }, { kind, state: read.state, version: read.version });
    if (refused !== null) throw refused;
  }
  return read;
}

async function committedState(host: ShardHost, type: string, id: string): Promise<{ state: unknown; version: number }> {
  await host.open();
  const reg = host.ctx.registry.get(type);
  if (reg === undefined) throw host.ctx.registry.check(type, '', undefined, { aggregateId: id });
  let cell = host.cells.get(type, id);
  if (cell === undefined) {
    cell = new ActorCell(reg, id, host.generation);
    host.cells.add(cell);
    activate(host, cell);
  }
  if (cell.phase === 'activating') {
    await cell.activated;
    return committedState(host, type, id);
  }
  if (cell.phase === 'passivating') cell.phase = 'running';
  cell.lastUsed = Date.now();
  return { state: cell.state, version: cell.version };
}

/** Every committed event of an actor, in order, as full envelopes. An actor type's `authorize` judges `principal` first (as `history`). */
export async function actorHistory(host: ShardHost, type: string, id: string, principal: Principal | null = null): Promise<EventEnvelope[]> {
  if (host.ctx.registry.get(type)?.def.authorize != null) await queryActor(host, type, id, principal, 'history');
  await host.open();
  await host.ctx.store.flushed();
  host.ctx.store.refresh();
  const out: EventEnvelope[] = [];
  const reg = host.ctx.registry.get(type);
  for await (const { position, data } of messagesAt(host.ctx.journal, host.subject, host.shard, host.ctx.store.historyAfter(type, id, 0), host.recentLog)) {
    for (const c of decodeCommits(data)) {
      // Decrypted (or redacted) and upcast to the current versions.
      if (c[COMMIT.type] === type && c[COMMIT.id] === id) for (const e of await readCommit(reg, c, position, host.ctx.registry.keys, 'throw')) out.push(e);
    }
  }
  return out;
}
