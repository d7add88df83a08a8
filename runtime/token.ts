/**
 * Signed tokens at the node's door: a JWT, verified with a configured public key or a JWKS
 * file (jose), becomes the principal of the commands and reads it comes with (principal.ts).
 *
 *   header Troupe-Auth: <JWT>  →  signature, exp / nbf, iss, aud checked  →  claims  →  { id, roles, tenant? }
 *
 * The default mapping: `id` is the `sub` claim, `roles` the `roles` claim (an array of
 * strings, or a space-separated string), `tenant` the `tenant` claim. Any failure is
 * UNAUTHENTICATED and names what is wrong, never the token. A verified token is remembered
 * until it expires (a bounded cache), so a client sending many requests with one token pays
 * for one signature check.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { InvalidOptionError, UnauthenticatedError } from './errors.ts';
import { toPrincipal, type Principal } from './principal.ts';

/** `options.auth` of a node. */
export interface AuthOptions {
  /** Refuse requests without a token (UNAUTHENTICATED). Default true. When false, they run as no one (principal null). */
  required?: boolean;
  /** The issuer's public key: PEM (SPKI or certificate) text, or a KeyObject. Give this or `jwksFile`. */
  publicKey?: string | KeyObject;
  /** Path of a JWKS file (`{ "keys": [...] }`): the token's `kid` picks the key. Read once, at start. */
  jwksFile?: string;
  /** Accepted signing algorithms. Default: those of the key's type (jose refuses `none` and HMAC with a public key). */
  algorithms?: string[];
  /** The `iss` claim required, if any. */
  issuer?: string | string[];
  /** The `aud` claim required, if any. */
  audience?: string | string[];
  /** Seconds of clock skew tolerated on exp and nbf. Default 0. */
  clockToleranceSec?: number;
  /** Claims → principal. Default `{ id: sub, roles: roles, tenant: tenant }`. */
  principal?: (claims: JWTPayload) => Principal;
}

/** How many verified tokens are remembered (the cache is emptied when it is full). */
const CACHE_LIMIT = 10_000;

export class TokenVerifier {
  readonly required: boolean;
  private readonly cache = new Map<string, { principal: Principal; expiresAt: number }>();

  private constructor(
    private readonly key: KeyObject | JWTVerifyGetKey,
    private readonly options: AuthOptions,
  ) {
    this.required = options.required ?? true;
  }

  /** Check `options.auth` and load its key; throws INVALID_OPTION naming the fix. */
  static create(options: AuthOptions): TokenVerifier {
    if (typeof options !== 'object' || options === null) throw new InvalidOptionError('options.auth must be an object: { publicKey | jwksFile, required?, issuer?, audience?, principal? }', { field: 'auth' });
    if (options.required !== undefined && typeof options.required !== 'boolean') throw new InvalidOptionError(`options.auth.required must be a boolean, got ${JSON.stringify(options.required)}`, { field: 'auth.required' });
    if (options.principal !== undefined && typeof options.principal !== 'function') throw new InvalidOptionError('options.auth.principal must be a function (claims) => { id, roles, tenant? }', { field: 'auth.principal' });
    const tolerance = options.clockToleranceSec ?? 0;
    if (typeof tolerance !== 'number' || !(tolerance >= 0)) throw new InvalidOptionError(`options.auth.clockToleranceSec must be a number >= 0, got ${JSON.stringify(tolerance)}`, { field: 'auth.clockToleranceSec' });
    const given = (options.publicKey !== undefined ? 1 : 0) + (options.jwksFile !== undefined ? 1 : 0);
    if (given !== 1) throw new InvalidOptionError('options.auth needs exactly one of publicKey (PEM text or a KeyObject) or jwksFile (the path of a JWKS file)', { field: 'auth' });
    if (options.publicKey !== undefined) {
      let key: KeyObject;
      try {
        key = typeof options.publicKey === 'string' ? createPublicKey(options.publicKey) : options.publicKey;
      } catch (e) {
        throw new InvalidOptionError(`options.auth.publicKey is not a public key in PEM form: ${(e as Error).message}`, { field: 'auth.publicKey' });
      }
      if (key.type !== 'public') throw new InvalidOptionError(`options.auth.publicKey must be a public key, got a ${key.type} key (never give the node a private or secret key)`, { field: 'auth.publicKey' });
      return new TokenVerifier(key, options);
    }
    let jwks: JSONWebKeySet;
    try {
      jwks = JSON.parse(readFileSync(options.jwksFile!, 'utf8')) as JSONWebKeySet;
      if (!Array.isArray(jwks?.keys)) throw new Error('it holds no "keys" array');
    } catch (e) {
      throw new InvalidOptionError(`options.auth.jwksFile ${JSON.stringify(options.jwksFile)} is not a readable JWKS file ({ "keys": [...] }): ${(e as Error).message}`, { field: 'auth.jwksFile' });
    }
    if (jwks.keys.some((k) => typeof k.d === 'string' || typeof k.k === 'string')) {
      throw new InvalidOptionError(`options.auth.jwksFile ${JSON.stringify(options.jwksFile)} holds a private or secret key; give the node public keys only`, { field: 'auth.jwksFile' });
    }
    return new TokenVerifier(createLocalJWKSet(jwks), options);
  }

  /** The principal of `token`, or null for no token when none is required; throws UNAUTHENTICATED. */
  async verify(token: string | null): Promise<Principal | null> {
    if (token === null || token === '') {
      if (this.required) throw new UnauthenticatedError('this node requires a signed token (the Troupe-Auth header; TroupeClient option `token`), and the request has none');
      return null;
    }
    const now = Date.now();
    const hit = this.cache.get(token);
    if (hit !== undefined) {
      if (hit.expiresAt > now) return hit.principal;
      this.cache.delete(token);
    }
    let claims: JWTPayload;
    try {
      const o = this.options;
      const verifyOptions = {
        ...(o.algorithms !== undefined ? { algorithms: o.algorithms } : {}),
        ...(o.issuer !== undefined ? { issuer: o.issuer } : {}),
        ...(o.audience !== undefined ? { audience: o.audience } : {}),
        clockTolerance: o.clockToleranceSec ?? 0,
      };
      // Two calls: jwtVerify's overloads take a key or a key-getting function, not their union.
      claims = typeof this.key === 'function'
        ? (await jwtVerify(token, this.key, verifyOptions)).payload
        : (await jwtVerify(token, this.key, verifyOptions)).payload;
    } catch (e) {
      throw new UnauthenticatedError(`the token was refused: ${reason(e)}`, { reason: (e as { code?: string }).code ?? 'ERR_JWT_INVALID' });
    }
    let principal: Principal;
    try {
      principal = toPrincipal(this.options.principal !== undefined ? this.options.principal(claims) : defaultPrincipal(claims), 'the token\'s claims');
    } catch (e) {
      throw new UnauthenticatedError(`the token is valid but names no principal: ${(e as Error).message}`, { reason: 'NO_PRINCIPAL' });
    }
    if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
    const exp = typeof claims.exp === 'number' ? claims.exp * 1000 + (this.options.clockToleranceSec ?? 0) * 1000 : now + 60_000;
    this.cache.set(token, { principal, expiresAt: Math.min(exp, now + 10 * 60_000) });
    return principal;
  }
}

/** `{ id: sub, roles, tenant }` from standard-looking claims. */
export function defaultPrincipal(claims: JWTPayload): Principal {
  const roles = claims.roles;
  return toPrincipal({
    id: claims.sub,
    roles: typeof roles === 'string' ? roles.split(' ').filter((r) => r !== '') : roles ?? [],
    tenant: typeof claims.tenant === 'string' ? claims.tenant : undefined,
  }, 'the token\'s claims (sub, roles, tenant)');
}

/** Why jose refused a token, in words that name no part of the token. */
function reason(e: unknown): string {
  const code = (e as { code?: string }).code;
  switch (code) {
    case 'ERR_JWT_EXPIRED': return 'it has expired';
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED': return 'its signature does not verify with the configured key';
    case 'ERR_JWKS_NO_MATCHING_KEY': return 'no key of the JWKS file matches its kid and algorithm';
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS': return 'several keys of the JWKS file match it; give each key a kid';
    case 'ERR_JOSE_ALG_NOT_ALLOWED': return 'its algorithm is not allowed';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED': return `claim check failed (${(e as Error).message})`;
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID': return 'it is not a well-formed signed JWT';
    default: return code === undefined ? 'it could not be verified' : `${code}`;
  }
}
