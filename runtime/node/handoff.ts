/**
 * A planned hand-off, node to node. Before the old owner of a shard stops serving it, it offers
 * the shard's shared checkpoint (journal/shared-checkpoints.ts) to the next owner, on
 * `<prefix>.handoff.<node>`. The next owner restores it into its LMDB cache while the old owner
 * still serves, and answers once it has. After the lease changes hands, the new owner reads only
 * the few commits appended since the checkpoint: the cut-over does not wait for the
 * checkpoint's download and import.
 *
 * The offer only saves time. With no answer within `OFFER_TIMEOUT_MS` (an older node, a busy
 * one, a lost message), the hand-off goes on as without it: the new owner restores the
 * checkpoint during its catch-up. A node restores only shards it wants and does not hold.
 *
 *   old owner: share checkpoint ─▶ offer ──────────────▶ unsubscribe, drain, release lease
 *   new owner:                      restore (prefetch) ─▶ answer        take lease, read tail, serve
 */
import type { NatsConnection, Subscription } from '../journal/journal.ts';
import type { Store } from '../journal/store.ts';
import type { SharedCheckpoints } from '../journal/shared-checkpoints.ts';

/** How long an old owner waits for the next owner to restore an offered checkpoint. */
export const OFFER_TIMEOUT_MS = 1_000;

export function handOffSubject(prefix: string, node: string): string {
  return `${prefix}.handoff.${node}`;
}

interface Offer {
  from: string;
  shards: number[];
}

/**
 * Answer offers made to `node`: `restore(shards)` restores the checkpoints of those it takes and
 * resolves with them. Returns the unsubscribe.
 */
export function serveHandOffs(nc: NatsConnection, prefix: string, node: string, restore: (offer: Offer) => Promise<number[]>): () => void {
  const sub: Subscription = nc.subscribe(handOffSubject(prefix, node), {
    callback: (_err, msg) => {
      if (msg.reply === undefined || msg.reply === '') return;
      let offer: Offer;
      try {
        offer = msg.json<Offer>();
        if (!Array.isArray(offer.shards) || !offer.shards.every((s) => Number.isInteger(s) && s >= 0)) throw new Error('shards');
      } catch {
        msg.respond(JSON.stringify({ restored: [], error: 'malformed offer' }));
        return;
      }
      restore(offer).then(
        (restored) => msg.respond(JSON.stringify({ restored })),
        (e: unknown) => msg.respond(JSON.stringify({ restored: [], error: (e as Error).message })),
      );
    },
  });
  return () => sub.unsubscribe();
}

/**
 * Offer the checkpoints of `shards` to the nodes placement gives them next (`nextOwner`), and
 * wait until each restored them, or OFFER_TIMEOUT_MS. Resolves with what was offered and what
 * was restored, or null when no shard goes to another node.
 */
export async function offerToNextOwners(nc: NatsConnection, prefix: string, self: string, shards: readonly number[], nextOwner: (shard: number) => string | undefined):
  Promise<{ shards: readonly number[]; restored: number[]; ms: number } | null> {
  const byNode = new Map<string, number[]>();
  for (const s of shards) {
    const next = nextOwner(s);
    if (next === undefined || next === self) continue;
    const list = byNode.get(next);
    if (list === undefined) byNode.set(next, [s]);
    else list.push(s);
  }
  if (byNode.size === 0) return null;
  const started = Date.now();
  const restored = await offerCheckpoints(nc, prefix, self, byNode);
  return { shards, restored, ms: Date.now() - started };
}

/** Offer the checkpoints to each node of `byNode` (node → shards); resolves with the shards restored. */
async function offerCheckpoints(nc: NatsConnection, prefix: string, from: string, byNode: ReadonlyMap<string, number[]>): Promise<number[]> {
  const answers = await Promise.all([...byNode].map(async ([node, shards]) => {
    try {
      const reply = await nc.request(handOffSubject(prefix, node), JSON.stringify({ from, shards } satisfies Offer), { timeout: OFFER_TIMEOUT_MS });
      const restored = reply.json<{ restored?: unknown }>().restored;
      return Array.isArray(restored) ? restored.filter((s): s is number => typeof s === 'number') : [];
    } catch {
      return []; // no answer: the next owner restores the checkpoint at its catch-up
    }
  }));
  return answers.flat();
}

/**
 * Restore the checkpoint another node shared for `shard`, when it covers more of the log than
 * the local cache (`local`) and no more than the log holds (`last`). Returns its position, or 0
 * when none was restored: then the log is read from the local checkpoint, as without one.
 */
export async function restoreSharedCheckpoint(store: Store, shared: SharedCheckpoints | null | undefined, shard: number, shards: number, local: number, last: number): Promise<number> {
  if (shared == null) return 0;
  try {
    const m = await shared.manifest(shard);
    store.refresh();
    if (m === null || m.position <= local || m.position > last || m.identity !== store.getStreamIdentity()) return 0;
    const bytes = await shared.read(shard, m);
    if (bytes === null) return 0;
    await store.importShard(shard, shards, m.position, bytes);
    return m.position;
  } catch {
    return 0; // the log alone serves: the checkpoint only saves reading
  }
}
