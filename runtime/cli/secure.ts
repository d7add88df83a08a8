/**
 * The locked-down nats-server configuration of `troupe start --secure`: one account with
 * JetStream, four users with subject permissions, random passwords.
 *
 *   node      the Troupe node: publishes the log, runs the JetStream API for its stream and its
 *             buckets (<stream>_shards, _nodes, _keys), serves the request subjects. Cannot
 *             delete a stream.
 *   client    TroupeClient and `troupe send|state|history`: sends commands, queries and history
 *             requests (<prefix>.cmd|q|h.<shard> and the shared <prefix>.cmd|query|history),
 *             reads the stream's info (its shard count), receives replies on _INBOX.>.
 *   consumer  consume(): reads the log through its own consumers, keeps its lease bucket
 *             (<stream>_consumer_<name>, one per name it is granted) and the dead-letter stream
 *             (<stream>_DLQ). No publish on the log, no requests to actors.
 *   admin     everything, stream creation and deletion included.
 *
 * Client and consumer are also denied, explicitly, the log subjects, the creation of the log
 * stream and of the node's buckets, every stream deletion and the shard-lease bucket: a deny
 * wins over any allow a later edit of the file adds.
 *
 * The files live in <data>/secure (mode 0700): `users.json` (the passwords, made once), one
 * `<user>.env` per user (NATS_USER, NATS_PASSWORD, for `set -a; . ./client.env`) and
 * `nats.conf`, written again from users.json on every start (so `--consumers` may change);
 * all mode 0600. Nothing here prints a password.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_STREAM, DEFAULT_SUBJECT_PREFIX } from '../options.ts';

export const SECURE_USERS = ['node', 'client', 'consumer', 'admin'] as const;
export type SecureUser = (typeof SECURE_USERS)[number];

export interface SubjectPermissions {
  publish: { allow: string[]; deny: string[] };
  subscribe: { allow: string[]; deny: string[] };
}

export interface SecureLayout {
  /** The log stream (default TROUPE). */
  stream?: string;
  /** The subject prefix (default troupe). */
  subjectPrefix?: string;
  /** Consumer names the `consumer` user may run: each gets its lease bucket. */
  consumers?: readonly string[];
}

const NAME = /^[A-Za-z0-9_-]+$/;

/** The subject permissions of each user for `layout`; admin has none (all allowed). */
export function securePermissions(layout: SecureLayout = {}): Record<Exclude<SecureUser, 'admin'>, SubjectPermissions> {
  const s = layout.stream ?? DEFAULT_STREAM;
  const p = layout.subjectPrefix ?? DEFAULT_SUBJECT_PREFIX;
  const consumers = layout.consumers ?? [];
  for (const n of consumers) {
    if (!NAME.test(n)) throw new Error(`consumer name ${JSON.stringify(n)} is not a NATS name: use letters, digits, _ and -`);
  }
  const api = '$JS.API';
  const nodeBuckets = ['shards', 'nodes', 'keys'].map((b) => `${s}_${b}`);
  const requests = [`${p}.cmd`, `${p}.cmd.>`, `${p}.query`, `${p}.q.>`, `${p}.history`, `${p}.h.>`];
  // What neither a client nor a consumer may ever do, whatever else is allowed.
  const never = [
    `${p}.log.>`,
    `${api}.STREAM.DELETE.>`,
    `${api}.STREAM.CREATE.${s}`, `${api}.STREAM.UPDATE.${s}`, `${api}.STREAM.PURGE.${s}`, `${api}.STREAM.MSG.DELETE.${s}`,
    ...nodeBuckets.flatMap((b) => [`${api}.STREAM.CREATE.KV_${b}`, `${api}.STREAM.UPDATE.KV_${b}`, `${api}.STREAM.PURGE.KV_${b}`]),
    `$KV.${s}_shards.>`,
    `${api}.STREAM.INFO.KV_${s}_shards`, `${api}.STREAM.MSG.GET.KV_${s}_shards`,
    `${api}.DIRECT.GET.KV_${s}_shards`, `${api}.DIRECT.GET.KV_${s}_shards.>`,
    `${api}.CONSUMER.*.KV_${s}_shards`, `${api}.CONSUMER.*.KV_${s}_shards.>`, `${api}.CONSUMER.MSG.NEXT.KV_${s}_shards.>`,
  ];
  const dlq = `${s}_DLQ`;
  const consumerBuckets = consumers.map((n) => `KV_${s}_consumer_${n}`);
  return {
    node: {
      publish: {
        allow: [`${api}.>`, '$JS.ACK.>', '$JS.FC.>', `${p}.>`, ...nodeBuckets.map((b) => `$KV.${b}.>`), '_INBOX.>'],
        deny: [`${api}.STREAM.DELETE.>`],
      },
      // ...the operators' scatter-gather (remote/ops-service.ts), which only the admin user sends,
      // the checkpoint offers of planned hand-offs between nodes (node/handoff.ts), and the stream's leader elections.
      subscribe: { allow: ['_INBOX.>', ...requests, `${p}.ops.stats`, `${p}.ops.actors`, `${p}.ops.timers`, `${p}.handoff.>`,
        // A new leader of the stream: appends in flight fail at once (node/worker.ts).
        `$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.${s}`], deny: [] },
    },
    client: {
      publish: {
        allow: [...requests, `${api}.INFO`, `${api}.STREAM.NAMES`, `${api}.STREAM.INFO.${s}`],
        deny: [...never, `${api}.STREAM.CREATE.>`],
      },
      subscribe: { allow: ['_INBOX.>'], deny: [] },
    },
    consumer: {
      publish: {
        allow: [
          `${api}.INFO`, `${api}.STREAM.NAMES`, `${api}.STREAM.INFO.${s}`,
          // Its JetStream consumers on the log (durables, and the ordered reader of a restart).
          `${api}.CONSUMER.*.${s}`, `${api}.CONSUMER.*.${s}.>`, `${api}.CONSUMER.MSG.NEXT.${s}.>`, `${api}.CONSUMER.DURABLE.CREATE.${s}.>`,
          `$JS.ACK.${s}.>`, '$JS.FC.>',
          // The dead-letter stream: created by the first consumer that needs it.
          `${api}.STREAM.CREATE.${dlq}`, `${api}.STREAM.INFO.${dlq}`, `${api}.STREAM.MSG.GET.${dlq}`, `${api}.STREAM.MSG.DELETE.${dlq}`, `${api}.STREAM.PURGE.${dlq}`,
          `${api}.CONSUMER.*.${dlq}`, `${api}.CONSUMER.*.${dlq}.>`, `${api}.CONSUMER.MSG.NEXT.${dlq}.>`, `$JS.ACK.${dlq}.>`,
          `${p}.dlq.>`,
          // Each granted name's lease bucket.
          ...consumerBuckets.flatMap((b) => [
            `${api}.STREAM.CREATE.${b}`, `${api}.STREAM.INFO.${b}`, `${api}.STREAM.MSG.GET.${b}`,
            `${api}.DIRECT.GET.${b}`, `${api}.DIRECT.GET.${b}.>`,
            `${api}.CONSUMER.*.${b}`, `${api}.CONSUMER.*.${b}.>`, `${api}.CONSUMER.MSG.NEXT.${b}.>`,
            `$KV.${b.slice(3)}.>`,
          ]),
        ],
        deny: [...never, ...requests],
      },
      // Operators' requests a running consumer answers: replay a dead letter, rebuild a projection (admin sends them).
      subscribe: { allow: ['_INBOX.>', `${p}.ops.dlq.replay.>`, `${p}.ops.projection.rebuild.>`, `${p}.ops.consumer.status`], deny: [] },
    },
  };
}

function list(subjects: readonly string[]): string {
  return `[${subjects.map((x) => JSON.stringify(x)).join(', ')}]`;
}

function permissionsBlock(perm: SubjectPermissions): string {
  const part = (name: string, x: { allow: string[]; deny: string[] }) =>
    `        ${name}: { allow: ${list(x.allow)}${x.deny.length > 0 ? `, deny: ${list(x.deny)}` : ''} }`;
  return `      permissions: {\n${part('publish', perm.publish)}\n${part('subscribe', perm.subscribe)}\n      }`;
}

/** The text of the locked-down nats-server config for `passwords`. */
export function secureNatsConfig(passwords: Record<SecureUser, string>, layout: SecureLayout = {}): string {
  const perms = securePermissions(layout);
  const user = (name: SecureUser) => {
    const head = `      user: ${JSON.stringify(name)}, password: ${JSON.stringify(passwords[name])}`;
    return name === 'admin' ? `    {\n${head}\n    }` : `    {\n${head}\n${permissionsBlock(perms[name])}\n    }`;
  };
  return `# Troupe: the locked-down nats-server configuration of \`troupe start --secure\`.
# Generated; written again on every start from users.json next to it. Mode 0600: it holds passwords.
# Users: node (the Troupe node), client (commands, queries, history), consumer (reads the log),
# admin (everything, stream creation and deletion included). See docs/security.md.
server_name: troupe-secure
listen: 127.0.0.1:4222
max_payload: 8MB

jetstream {
  max_memory_store: 256MB
  max_file_store: 10GB
}

accounts {
  TROUPE: {
    jetstream: enabled
    users: [
${SECURE_USERS.map(user).join(',\n')}
    ]
  }
}
`;
}

export interface SecureFiles {
  dir: string;
  /** The nats-server config. */
  configFile: string;
  /** Each user's name and password (read by `troupe start --secure` for its node). */
  users: Record<SecureUser, { user: string; password: string }>;
  /** Each user's NATS_USER / NATS_PASSWORD file. */
  envFiles: Record<SecureUser, string>;
  /** True when the passwords were made by this call. */
  created: boolean;
}

function writePrivate(path: string, text: string): void {
  writeFileSync(path, text, { mode: 0o600 });
  chmodSync(path, 0o600);
}

function readPasswords(file: string): Record<SecureUser, string> {
  const raw = JSON.parse(readFileSync(file, 'utf8')) as Record<string, { password?: unknown }>;
  const out = {} as Record<SecureUser, string>;
  for (const u of SECURE_USERS) {
    const pw = raw[u]?.password;
    if (typeof pw !== 'string' || pw.length < 16) throw new Error(`${file} has no password for user ${u}: delete the folder ${join(file, '..')} to generate new credentials`);
    out[u] = pw;
  }
  return out;
}

/**
 * The secure configuration in `dir`: passwords made once (users.json), the nats-server config
 * and the per-user env files written from them. Every file mode 0600, the folder 0700.
 */
export function ensureSecureConfig(dir: string, layout: SecureLayout = {}): SecureFiles {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const usersFile = join(dir, 'users.json');
  const created = !existsSync(usersFile);
  let passwords: Record<SecureUser, string>;
  if (created) {
    passwords = Object.fromEntries(SECURE_USERS.map((u) => [u, randomBytes(24).toString('base64url')])) as Record<SecureUser, string>;
    writePrivate(usersFile, `${JSON.stringify(Object.fromEntries(SECURE_USERS.map((u) => [u, { user: u, password: passwords[u] }])), null, 2)}\n`);
  } else {
    chmodSync(usersFile, 0o600);
    passwords = readPasswords(usersFile);
  }
  const configFile = join(dir, 'nats.conf');
  writePrivate(configFile, secureNatsConfig(passwords, layout));
  const envFiles = {} as Record<SecureUser, string>;
  const users = {} as Record<SecureUser, { user: string; password: string }>;
  for (const u of SECURE_USERS) {
    envFiles[u] = join(dir, `${u}.env`);
    writePrivate(envFiles[u], `NATS_USER=${u}\nNATS_PASSWORD=${passwords[u]}\n`);
    users[u] = { user: u, password: passwords[u] };
  }
  return { dir, configFile, users, envFiles, created };
}
