/**
 * How every Troupe connection to NATS authenticates: the node's main thread and worker threads,
 * TroupeClient, consumers, the dead-letter queue, the key store and the CLI.
 *
 * This file builds plain data only (it may import no wing, nor @nats-io/*): `resolveNatsAuth`
 * merges options over the usual environment into a `NatsAuth`, which crosses to worker threads
 * as it is; each file that talks to NATS turns it into nats.js connection options with
 * `natsConnectOptions`, handing in the client's authenticator factories.
 *
 *   option            environment                 meaning
 *   user, password    NATS_USER, NATS_PASSWORD    user and password
 *   token             NATS_TOKEN                  a token
 *   nkeySeed          NATS_NKEY                   an NKey seed (SU...), or a file holding one
 *   credsFile         NATS_CREDS                  a credentials file (.creds: a user JWT and its seed)
 *   tls.caFile        NATS_TLS_CA                 CA certificate(s) that sign the server's certificate
 *   tls.certFile      NATS_TLS_CERT               client certificate (mutual TLS) ...
 *   tls.keyFile       NATS_TLS_KEY                ... and its key
 *
 * Secrets never leave this structure: `describeServers` drops user:password@ from URLs, and
 * `redactSecrets` takes every secret out of a text, for the messages of connection errors.
 */
import { readFileSync } from 'node:fs';
import { InvalidOptionError, NatsAuthError } from './errors.ts';

export interface NatsTlsOptions {
  /** CA certificate file (PEM) the server's certificate must chain to. */
  caFile?: string;
  /** Client certificate file (PEM), for servers that verify clients. */
  certFile?: string;
  /** The client certificate's key file (PEM). */
  keyFile?: string;
}

/** How to authenticate to NATS. Every field also comes from the environment (see the file's header); options win. */
export interface NatsAuthOptions {
  user?: string;
  password?: string;
  token?: string;
  /** An NKey user seed (`SU...`), or the path of a file holding one. */
  nkeySeed?: string;
  /** A NATS credentials file (`.creds`). */
  credsFile?: string;
  /** TLS: `true` to require TLS with the system's CAs, or files. */
  tls?: NatsTlsOptions | boolean;
  /**
   * What these options are called where they came from, for messages (never a value): the
   * command line passes `{ password: '--nats-password', ... }`. Default `options.nats.<field>`.
   */
  optionNames?: Partial<Record<CredentialField, string>>;
}

/** The fields that name or hold a credential. */
export type CredentialField = 'user' | 'password' | 'token' | 'nkeySeed' | 'credsFile';

/** `NatsAuthOptions` resolved against the environment: plain data that crosses threads. */
export interface NatsAuth {
  readonly user?: string;
  readonly password?: string;
  readonly token?: string;
  readonly nkeySeed?: string;
  readonly credsFile?: string;
  readonly tls?: NatsTlsOptions;
  /** Where each credential came from: the name of its option or environment variable (never its value). */
  readonly from?: Readonly<Partial<Record<CredentialField, string>>>;
}

/** The client's authenticator factories (`credsAuthenticator`, `nkeyAuthenticator` of @nats-io/transport-node). */
export interface AuthenticatorFactories {
  creds(creds: Uint8Array): unknown;
  nkey(seed: Uint8Array): unknown;
}

export const NATS_ENV = {
  url: 'NATS_URL', user: 'NATS_USER', password: 'NATS_PASSWORD', token: 'NATS_TOKEN', nkey: 'NATS_NKEY', creds: 'NATS_CREDS',
  tlsCa: 'NATS_TLS_CA', tlsCert: 'NATS_TLS_CERT', tlsKey: 'NATS_TLS_KEY',
} as const;

function pick(opt: string | undefined, env: Record<string, string | undefined>, name: string): string | undefined {
  if (opt !== undefined && opt !== '') return opt;
  const v = env[name];
  return v !== undefined && v !== '' ? v : undefined;
}

const CREDENTIAL_ENV: Readonly<Record<CredentialField, string>> = {
  user: NATS_ENV.user, password: NATS_ENV.password, token: NATS_ENV.token, nkeySeed: NATS_ENV.nkey, credsFile: NATS_ENV.creds,
};

/** Merge options over NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_NKEY, NATS_CREDS and NATS_TLS_*. */
export function resolveNatsAuth(opts: NatsAuthOptions = {}, env: Record<string, string | undefined> = process.env): NatsAuth {
  const out: { -readonly [K in keyof NatsAuth]: NatsAuth[K] } = {};
  const from: Partial<Record<CredentialField, string>> = {};
  for (const field of Object.keys(CREDENTIAL_ENV) as CredentialField[]) {
    const value = pick(opts[field], env, CREDENTIAL_ENV[field]);
    if (value === undefined) continue;
    out[field] = value;
    from[field] = opts[field] !== undefined && opts[field] !== '' ? opts.optionNames?.[field] ?? `options.nats.${field}` : CREDENTIAL_ENV[field];
  }
  const { user, password } = out;
  if (Object.keys(from).length > 0) out.from = from;
  if (password !== undefined && user === undefined) throw new InvalidOptionError(`a NATS password is set (options.nats.password or ${NATS_ENV.password}) without a user: set options.nats.user or ${NATS_ENV.user}`);
  const t = typeof opts.tls === 'object' ? opts.tls : {};
  const tls: NatsTlsOptions = {};
  const caFile = pick(t.caFile, env, NATS_ENV.tlsCa);
  const certFile = pick(t.certFile, env, NATS_ENV.tlsCert);
  const keyFile = pick(t.keyFile, env, NATS_ENV.tlsKey);
  if (caFile !== undefined) tls.caFile = caFile;
  if (certFile !== undefined) tls.certFile = certFile;
  if (keyFile !== undefined) tls.keyFile = keyFile;
  if ((certFile === undefined) !== (keyFile === undefined)) throw new InvalidOptionError(`a NATS client certificate needs both a certificate and its key: set tls.certFile and tls.keyFile (${NATS_ENV.tlsCert}, ${NATS_ENV.tlsKey})`);
  if (opts.tls === true || Object.keys(tls).length > 0) out.tls = tls;
  return out;
}

/** The seed bytes of an NKey given as a seed or as a file holding one. */
function seedBytes(seed: string): Uint8Array {
  const text = /^S[A-Z]{2}[A-Z2-7]{50,}$/.test(seed.trim()) ? seed.trim() : readSecretFile(seed, 'the NKey seed file').trim();
  return new TextEncoder().encode(text);
}

function readSecretFile(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new InvalidOptionError(`cannot read ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? 'unreadable'}`);
  }
}

/**
 * nats.js connection options for `servers` (comma separated) with `auth`. `extra` (name,
 * reconnect and timeout settings) is merged in.
 */
export function natsConnectOptions<T extends Record<string, unknown>>(servers: string, auth: NatsAuth, factories: AuthenticatorFactories, extra: T): T & Record<string, unknown> {
  const o: Record<string, unknown> = { ...extra, servers: servers.split(',').map((s) => s.trim()).filter((s) => s !== '') };
  if (auth.user !== undefined) o.user = auth.user;
  if (auth.password !== undefined) o.pass = auth.password;
  if (auth.token !== undefined) o.token = auth.token;
  if (auth.credsFile !== undefined) o.authenticator = factories.creds(new TextEncoder().encode(readSecretFile(auth.credsFile, 'the NATS credentials file')));
  else if (auth.nkeySeed !== undefined) o.authenticator = factories.nkey(seedBytes(auth.nkeySeed));
  if (auth.tls !== undefined) o.tls = { ...auth.tls };
  return o as T & Record<string, unknown>;
}

/** The servers as they may be shown: URLs without user:password@ (or token@). */
export function describeServers(servers: string): string {
  return servers.split(',').map((s) => s.trim().replace(/^([a-z]+:\/\/)[^@/]*@/i, '$1')).join(',');
}

/** Every secret of `auth` (and any user:password@ in `servers`) taken out of `text`. */
export function redactSecrets(text: string, auth: NatsAuth, servers = ''): string {
  const secrets: string[] = [];
  if (auth.password !== undefined) secrets.push(auth.password);
  if (auth.token !== undefined) secrets.push(auth.token);
  if (auth.nkeySeed !== undefined) secrets.push(auth.nkeySeed);
  for (const m of servers.matchAll(/[a-z]+:\/\/([^@/]*)@/gi)) {
    const info = m[1]!;
    secrets.push(info);
    const colon = info.indexOf(':');
    if (colon >= 0) secrets.push(info.slice(colon + 1));
  }
  let out = text;
  for (const s of secrets.filter((x) => x.length > 0).sort((a, b) => b.length - a.length)) out = out.split(s).join('***');
  return out;
}

/**
 * Whether a failed connection is the server refusing this process's credentials (or their
 * absence): an authorization violation, or credentials that expired or were revoked. Trying
 * again with the same credentials is refused again.
 */
export function isLoginRefused(e: unknown): boolean {
  const err = e as { message?: unknown; name?: unknown } | null;
  const message = typeof err?.message === 'string' ? err.message : String(e);
  return /authorization violation|authentication expired|authentication revoked/i.test(message);
}

/** NATS_AUTH (not retryable) when `e` is a refused login, with a message that names the credentials and their source; else null. */
export function loginRefusal(servers: string, auth: NatsAuth, e: unknown, purpose = ''): NatsAuthError | null {
  if (!isLoginRefused(e)) return null;
  // No cause: nothing that might quote a secret.
  return new NatsAuthError(`${connectFailure(servers, auth, e)}${purpose}`, { servers: describeServers(servers), credentials: credentialsUsed(auth) });
}

/** The credentials a connection presented, as they may be shown: kinds and sources, never values. */
function credentialsUsed(auth: NatsAuth): string {
  const from = auth.from ?? {};
  const src = (...fields: CredentialField[]) => {
    const names = fields.map((f) => from[f]).filter((n): n is string => n !== undefined);
    return names.length === 0 ? '' : `, from ${names.join(' and ')}`;
  };
  if (auth.credsFile !== undefined) return `the credentials file ${auth.credsFile}${src('credsFile')}`;
  if (auth.nkeySeed !== undefined) return `the NKey seed${src('nkeySeed')}`;
  if (auth.token !== undefined) return `the NATS token${src('token')}`;
  if (auth.user !== undefined) return `user ${auth.user} and ${auth.password === undefined ? 'no password' : 'its password'}${src('user', 'password')}`;
  return 'no credentials';
}

/** The message of a failed connection: where, and why, with no secret in it. */
export function connectFailure(servers: string, auth: NatsAuth, e: unknown): string {
  const err = e as { message?: string; code?: string };
  let why = err?.message ?? String(e);
  if (isLoginRefused(e)) {
    const how = credentialsUsed(auth);
    why = `the server refused ${how} (authorization violation): check ${how === 'no credentials' ? `${NATS_ENV.user}/${NATS_ENV.password}, ${NATS_ENV.creds} or ${NATS_ENV.token}` : 'them'}`;
  } else if (/timeout/i.test(why) && auth.tls !== undefined && auth.tls.certFile === undefined) {
    why += ` (over TLS: a server that verifies clients drops one without a certificate; check tls.certFile and tls.keyFile, ${NATS_ENV.tlsCert} and ${NATS_ENV.tlsKey})`;
  }
  return redactSecrets(`cannot connect to NATS at ${describeServers(servers)}: ${why}`, auth, servers);
}
