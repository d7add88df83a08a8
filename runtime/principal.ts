/**
 * Who sends a command, and the rules that say what they may do.
 *
 * A principal is a verified identity: `{ id, roles, tenant? }`. It comes from a signed token
 * checked at the node's door (token.ts), or from an in-process caller, who is trusted
 * (`node.send(..., { principal })`). The `userId` of every event a command decides is its
 * principal's id, never a value the caller claims.
 *
 * Rules come in three places, and every one that applies must allow the request:
 *   1. the node's `authorize` option: at the door, without the actor's state (node/system.ts);
 *   2. the actor type's `authorize` (defineActor): every command, query and history read;
 *   3. a command's own `authorize` (commands.X.authorize): that command.
 * A rule is `{ roles: [...] }` (the principal needs one of them) or a function that returns
 * true to allow. 2 and 3 run where the actor's state is (the worker thread, or the test kit),
 * before decide, on the pending state: "only the owner withdraws" reads `ctx.state.owner`.
 * A refusal is FORBIDDEN, with the same message on the node and in the test kit.
 */
import { ForbiddenError, InvalidDefinitionError } from './errors.ts';

/** The NATS header that carries a signed token (JWT) with a command or read request. */
export const AUTH_HEADER = 'Troupe-Auth';

/** A verified identity. */
export interface Principal {
  readonly id: string;
  readonly roles: readonly string[];
  readonly tenant?: string;
}

/** What is being asked: a command (with its payload), or a read of the actor. */
export type RequestKind = 'command' | 'query' | 'history';

/** The request a rule judges. For a read, `type` is `query` or `history` and `payload` is undefined. */
export interface AuthorizeRequest {
  readonly kind: RequestKind;
  readonly type: string;
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly payload: unknown;
}

/** What an actor's rule knows besides the request: the actor's current (pending) state. */
export interface AuthorizeContext<S = unknown> {
  readonly kind: RequestKind;
  readonly state: S;
  /** The actor's version before the command (0: no history). */
  readonly version: number;
}

/** A rule function: return true to allow. Anything else, or a throw, refuses. */
export type AuthorizeFn<S = unknown> = (principal: Principal, request: AuthorizeRequest, ctx: AuthorizeContext<S>) => boolean;

/** A rule of an actor type or a command: roles allowed (any one of them), or a function. */
export type AuthorizeRule<S = unknown> = { readonly roles: readonly string[] } | AuthorizeFn<S>;

/** The node's rule (options.authorize): at the door, before the command reaches a worker; no state. */
export type NodeAuthorize = (principal: Principal | null, request: AuthorizeRequest) => boolean;

/** A checked rule, ready to run. `source` names it in refusals: `Account` or `Account.Withdraw`. */
export interface CompiledRule {
  readonly source: string;
  readonly roles: readonly string[] | null;
  readonly fn: AuthorizeFn<unknown> | null;
}

/** Check an `authorize` spec of a definition; null when there is none. */
export function compileRule(spec: unknown, source: string, aggregateType: string): CompiledRule | null {
  if (spec === undefined) return null;
  if (typeof spec === 'function') return Object.freeze({ source, roles: null, fn: spec as AuthorizeFn<unknown> });
  const roles = (spec as { roles?: unknown } | null)?.roles;
  if (typeof spec !== 'object' || spec === null || !Array.isArray(roles) || roles.length === 0 || roles.some((r) => typeof r !== 'string' || r === '')) {
    throw new InvalidDefinitionError(
      `actor ${aggregateType}: ${source}: authorize must be { roles: ['role', ...] } (at least one non-empty role) or a function (principal, request, ctx) => boolean, got ${describe(spec)}`,
      { aggregateType },
    );
  }
  return Object.freeze({ source, roles: Object.freeze([...roles as string[]]), fn: null });
}

/** The rules that apply to one command: the actor's, then the command's. Null when neither exists (one branch on the hot path). */
export function commandRules(actor: CompiledRule | null, command: CompiledRule | null): readonly CompiledRule[] | null {
  const list = [actor, command].filter((r): r is CompiledRule => r !== null);
  return list.length === 0 ? null : Object.freeze(list);
}

/**
 * Run `rules` for `principal`; the FORBIDDEN error of the first that refuses, or null. The
 * message names the principal, the request and the rule, never the payload.
 */
export function checkRules(rules: readonly CompiledRule[], principal: Principal | null, request: AuthorizeRequest, ctx: AuthorizeContext): ForbiddenError | null {
  for (const rule of rules) {
    const why = refusal(rule, principal, request, ctx);
    if (why !== null) return forbidden(principal, request, why);
  }
  return null;
}

function refusal(rule: CompiledRule, principal: Principal | null, request: AuthorizeRequest, ctx: AuthorizeContext): string | null {
  if (principal === null) return `${rule.source} requires an authenticated principal, and the request has none`;
  if (rule.roles !== null) {
    const roles = principal.roles;
    for (const r of rule.roles) if (roles.includes(r)) return null;
    return `${rule.source} allows roles ${rule.roles.join(', ')}; the principal has ${roles.length === 0 ? 'none' : roles.join(', ')}`;
  }
  let allowed: unknown;
  try {
    allowed = rule.fn!(principal, request, ctx);
  } catch (e) {
    return `the authorize rule of ${rule.source} threw (${e instanceof Error ? e.message : String(e)}), so the request is refused`;
  }
  return allowed === true ? null : `refused by the authorize rule of ${rule.source}`;
}

/** The FORBIDDEN error of a request: the same text on the node, its door and the test kit. */
export function forbidden(principal: Principal | null, request: AuthorizeRequest, why: string): ForbiddenError {
  const who = principal === null ? 'an anonymous caller' : `principal ${JSON.stringify(principal.id)}`;
  const what = request.kind === 'command' ? `send ${request.type} to` : `read the ${request.kind} of`;
  return new ForbiddenError(`${who} may not ${what} ${request.aggregateType} ${request.aggregateId}: ${why}`, {
    aggregateType: request.aggregateType, aggregateId: request.aggregateId, principalId: principal?.id ?? null,
    ...(request.kind === 'command' ? { commandType: request.type } : { read: request.kind }),
  });
}

/** A principal from untrusted input (a token's claims, a test): checked and frozen. */
export function toPrincipal(value: unknown, what: string): Principal {
  const p = value as { id?: unknown; roles?: unknown; tenant?: unknown } | null;
  if (typeof p !== 'object' || p === null || typeof p.id !== 'string' || p.id === '') {
    throw new TypeError(`${what}: a principal is { id: string, roles: string[], tenant?: string }, got ${describe(value)}`);
  }
  const roles = p.roles ?? [];
  if (!Array.isArray(roles) || roles.some((r) => typeof r !== 'string')) throw new TypeError(`${what}: principal.roles must be an array of strings, got ${describe(p.roles)}`);
  if (p.tenant !== undefined && p.tenant !== null && typeof p.tenant !== 'string') throw new TypeError(`${what}: principal.tenant must be a string, got ${describe(p.tenant)}`);
  const out: { id: string; roles: readonly string[]; tenant?: string } = { id: p.id, roles: Object.freeze([...roles as string[]]) };
  if (typeof p.tenant === 'string') out.tenant = p.tenant;
  return Object.freeze(out);
}

function describe(v: unknown): string {
  if (typeof v === 'function') return 'a function';
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}
