/**
 * The subjects of the request service. Each request is addressed to its shard, and only the
 * node that holds the shard's lease subscribes to that shard's subjects, so NATS delivers a
 * request to the owner: no forwarding hop, and no node answers a read for a shard it does not
 * hold. While a shard moves nobody subscribes for a moment: the request gets "no responders",
 * which TroupeClient retries.
 *
 *   <prefix>.cmd.<shard>   commands of that shard's actors (one request per shard per flush)
 *   <prefix>.q.<shard>     an actor's state and version
 *   <prefix>.h.<shard>     an actor's history
 *
 * `<prefix>.cmd`, `<prefix>.query` and `<prefix>.history` (one subject for every shard, served
 * by any node) are still answered, for clients older than owner-addressed subjects: the node
 * that takes such a request relays it to the shard subjects.
 */
export function commandSubject(prefix: string, shard: number): string {
  return `${prefix}.cmd.${shard}`;
}

export function querySubject(prefix: string, shard: number): string {
  return `${prefix}.q.${shard}`;
}

export function historySubject(prefix: string, shard: number): string {
  return `${prefix}.h.${shard}`;
}

/** The queue group of every node's subscriptions: while two nodes both subscribe (a moment of a move), one answers. */
export function queueGroup(prefix: string): string {
  return `${prefix}.nodes`;
}
