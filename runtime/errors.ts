/**
 * Every error Troupe raises. Each has a stable string `code`, whether a retry can help
 * (`retryable`), the ids someone needs to debug it, and an optional `cause`.
 *
 * One convention: every code belongs to exactly one class below (ERROR_CLASSES), each class
 * has a `name` equal to its class name, and nothing outside this file raises a bare
 * `new TroupeError(...)` (a unit test checks it).
 *
 * Errors lose their class when they cross `postMessage` or NATS: send `toWire(e)` and
 * rebuild with `fromWire()`, which builds the class of the code. Branch on them with
 * `isTroupeError(e, code)`.
 */

export type ErrorCode =
  | 'VALIDATION'
  | 'UNKNOWN_ACTOR_TYPE'
  | 'UNKNOWN_COMMAND_TYPE'
  | 'MALFORMED_COMMAND'
  | 'MALFORMED_REQUEST'
  | 'COMMAND_TOO_LARGE'
  | 'SCHEMA_VIOLATION'
  | 'SENSITIVE_DATA'
  | 'UPCAST_FAILED'
  | 'KEYS_UNAVAILABLE'
  | 'DOMAIN_REJECTION'
  | 'DECIDE_FAILED'
  | 'CONCURRENCY'
  | 'SHARD_NOT_OWNED'
  | 'JOURNAL_UNAVAILABLE'
  | 'OVERLOADED'
  | 'NOT_FOUND'
  | 'TIMEOUT'
  | 'INVALID_OPTION'
  | 'INVALID_DEFINITION'
  | 'STOPPED'
  | 'WORKER_LOST'
  | 'NATS_SERVER_UNSUPPORTED'
  | 'UNAUTHENTICATED'
  | 'FORBIDDEN'
  | 'RATE_LIMITED'
  | 'NATS_AUTH'
  | 'INTERNAL';

export interface ErrorData {
  aggregateType?: string;
  aggregateId?: string;
  commandId?: string;
  commandType?: string;
  sequence?: number;
  shard?: number;
  field?: string;
  [key: string]: unknown;
}

/**
 * The base class. Raise one of the subclasses below, never a bare TroupeError: every code
 * belongs to exactly one class (ERROR_CLASSES), and fromWire() rebuilds that class.
 */
export class TroupeError extends Error {
  override name = 'TroupeError';
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly data: ErrorData;

  constructor(code: ErrorCode, message: string, data: ErrorData = {}, options: { cause?: unknown; retryable?: boolean } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.data = data;
    this.retryable = options.retryable ?? false;
  }

  get aggregateType(): string | undefined { return this.data.aggregateType; }
  get aggregateId(): string | undefined { return this.data.aggregateId; }
  get commandId(): string | undefined { return this.data.commandId; }

  toJSON(): WireError {
    return toWire(this);
  }
}

/** The codes of ValidationError. */
export type ValidationCode =
  | 'VALIDATION' | 'MALFORMED_COMMAND' | 'MALFORMED_REQUEST' | 'COMMAND_TOO_LARGE' | 'SCHEMA_VIOLATION' | 'SENSITIVE_DATA'
  | 'UNKNOWN_ACTOR_TYPE' | 'UNKNOWN_COMMAND_TYPE';

/**
 * A command, event or request does not have the required shape (missing id, wrong types, a
 * schema or the sensitive-data guard refuses it, unreadable bytes on a query or history
 * subject). Nothing was appended; a retry with the same input fails the same way.
 */
export class ValidationError extends TroupeError {
  override name = 'ValidationError';
  constructor(code: ValidationCode, message: string, data: ErrorData = {}, cause?: unknown) {
    super(code, message, data, { cause, retryable: false });
  }
}

/** The actor refused the command: a business rule. Nothing was appended. */
export class DomainRejection extends TroupeError {
  override name = 'DomainRejection';
  constructor(message: string, data: ErrorData = {}, cause?: unknown) {
    super('DOMAIN_REJECTION', message, data, { cause, retryable: false });
  }
}

/** Throw this from a decide function to reject a command with a reason callers can branch on. */
export function reject(reason: string, details?: Record<string, unknown>): never {
  // A rejection is an answer, not a bug: skip the stack trace, which costs more than the decision.
  // (No try/finally: the constructor cannot throw, and a throw out of a finally block costs ~2 µs.)
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  const e = new DomainRejection(reason, details === undefined ? { reason } : { reason, ...details });
  Error.stackTraceLimit = limit;
  throw e;
}

/** A decide function threw something that is not a domain rejection: a bug in the actor. */
export class DecideFailedError extends TroupeError {
  override name = 'DecideFailedError';
  constructor(message: string, data: ErrorData = {}, cause?: unknown) {
    super('DECIDE_FAILED', message, data, { cause, retryable: false });
  }
}

/** The codes of ConcurrencyError. */
export type ConcurrencyCode = 'CONCURRENCY' | 'SHARD_NOT_OWNED';

/** Another writer appended to the shard (fencing), or the node does not own the shard. */
export class ConcurrencyError extends TroupeError {
  override name = 'ConcurrencyError';
  constructor(code: ConcurrencyCode, message: string, data: ErrorData = {}, cause?: unknown) {
    // Retryable: the command was not stored; a retry is decided against the state the log now holds.
    super(code, message, data, { cause, retryable: true });
  }
}

/** JetStream could not be reached or did not acknowledge. Retrying with the same commandId is safe. */
export class JournalUnavailableError extends TroupeError {
  override name = 'JournalUnavailableError';
  constructor(message: string, data: ErrorData = {}, cause?: unknown) {
    super('JOURNAL_UNAVAILABLE', message, data, { cause, retryable: true });
  }
}

/** Too many commands are in progress (`maxQueuedCommands`); retry later. */
export class OverloadedError extends TroupeError {
  override name = 'OverloadedError';
  constructor(message: string, data: ErrorData = {}) {
    super('OVERLOADED', message, data, { retryable: true });
  }
}

/** A named thing does not exist: a query, a dead letter. */
export class NotFoundError extends TroupeError {
  override name = 'NotFoundError';
  constructor(message: string, data: ErrorData = {}) {
    super('NOT_FOUND', message, data, { retryable: false });
  }
}

/** No answer in time; the outcome of a command may be unknown: retry with the same commandId. */
export class TimeoutError extends TroupeError {
  override name = 'TimeoutError';
  constructor(message: string, data: ErrorData = {}) {
    super('TIMEOUT', message, data, { retryable: true });
  }
}

/** An option (of a node, client, consumer, query) is wrong; the message names the fix. */
export class InvalidOptionError extends TroupeError {
  override name = 'InvalidOptionError';
  constructor(message: string, data: ErrorData = {}) {
    super('INVALID_OPTION', message, data, { retryable: false });
  }
}

/** An actor definition is wrong (names, versions, upcasters, guard); the message names the fix. */
export class InvalidDefinitionError extends TroupeError {
  override name = 'InvalidDefinitionError';
  constructor(message: string, data: ErrorData = {}) {
    super('INVALID_DEFINITION', message, data, { retryable: false });
  }
}

/**
 * A stored event or snapshot could not be brought to the current definition: an upcaster
 * threw, a version is newer than the definition, or a step of the chain is missing.
 */
export class UpcastError extends TroupeError {
  override name = 'UpcastError';
  constructor(message: string, data: ErrorData = {}, cause?: unknown) {
    super('UPCAST_FAILED', message, data, { cause, retryable: false });
  }
}

/**
 * Encryption keys could not be read or stored: the key bucket is unreachable, a key was
 * wrapped with another master key, or an event names a key that no store holds. Never
 * raised for a destroyed (shredded) key: readers get the redacted value instead.
 */
export class KeysUnavailableError extends TroupeError {
  override name = 'KeysUnavailableError';
  constructor(message: string, data: ErrorData = {}, cause?: unknown, retryable = true) {
    super('KEYS_UNAVAILABLE', message, data, { cause, retryable });
  }
}

/** The node is stopping or stopped; retry against a running node. */
export class StoppedError extends TroupeError {
  override name = 'StoppedError';
  constructor(message = 'the Troupe node is stopping or stopped; retry against a running node', data: ErrorData = {}) {
    super('STOPPED', message, data, { retryable: true });
  }
}

/** The worker thread hosting the command's shard died; the shard is re-opened from the log on another. */
export class WorkerLostError extends TroupeError {
  override name = 'WorkerLostError';
  constructor(message: string, data: ErrorData = {}, cause?: unknown) {
    super('WORKER_LOST', message, data, { cause, retryable: true });
  }
}

/** The connected nats-server cannot run Troupe: older than 2.10, or JetStream is off. */
export class NatsServerUnsupportedError extends TroupeError {
  override name = 'NatsServerUnsupportedError';
  constructor(message: string, data: ErrorData = {}) {
    super('NATS_SERVER_UNSUPPORTED', message, data, { retryable: false });
  }
}

/**
 * The caller's identity could not be verified: no token when the node requires one, or a token
 * that is expired, not yet valid, badly signed, or for another issuer or audience. Nothing was
 * appended; the same request fails the same way until it carries a valid token.
 */
export class UnauthenticatedError extends TroupeError {
  override name = 'UnauthenticatedError';
  constructor(message: string, data: ErrorData = {}) {
    super('UNAUTHENTICATED', message, data, { retryable: false });
  }
}

/**
 * The caller is known but may not do this: an `authorize` rule (of the node, the actor type or
 * the command) refused it. Nothing was appended. The message names the principal, never the payload.
 */
export class ForbiddenError extends TroupeError {
  override name = 'ForbiddenError';
  constructor(message: string, data: ErrorData = {}) {
    super('FORBIDDEN', message, data, { retryable: false });
  }
}

/**
 * The caller (its principal, or its tenant) sent more commands than its rate limit allows
 * (options.rateLimits). Nothing was appended; retry after `data.retryAfterMs`.
 */
export class RateLimitedError extends TroupeError {
  override name = 'RateLimitedError';
  constructor(message: string, data: ErrorData & { retryAfterMs: number }) {
    super('RATE_LIMITED', message, data, { retryable: true });
  }
}

/**
 * The NATS server refused to let this process in: wrong or missing credentials (user and
 * password, token, NKey, credentials file), or credentials that expired or were revoked. The
 * message names the credentials and where they came from, never their secret. Not retryable:
 * the same credentials are refused again.
 */
export class NatsAuthError extends TroupeError {
  override name = 'NatsAuthError';
  constructor(message: string, data: ErrorData = {}) {
    super('NATS_AUTH', message, data, { retryable: false });
  }
}

/**
 * Something that should not happen did: the log skips a version, a field does not decrypt
 * (the data or its ids were altered), a non-Troupe error crossed a boundary. A bug or damaged
 * data; not retryable unless the raiser knows better.
 */
export class InternalError extends TroupeError {
  override name = 'InternalError';
  constructor(message: string, data: ErrorData = {}, cause?: unknown, retryable = false) {
    super('INTERNAL', message, data, { cause, retryable });
  }
}

/** A class of Troupe error. */
export type TroupeErrorClass = abstract new (...args: never[]) => TroupeError;

/** The one class of every code: what fromWire() rebuilds, what `instanceof` can test. */
export const ERROR_CLASSES: Readonly<Record<ErrorCode, TroupeErrorClass>> = Object.freeze({
  VALIDATION: ValidationError,
  UNKNOWN_ACTOR_TYPE: ValidationError,
  UNKNOWN_COMMAND_TYPE: ValidationError,
  MALFORMED_COMMAND: ValidationError,
  MALFORMED_REQUEST: ValidationError,
  COMMAND_TOO_LARGE: ValidationError,
  SCHEMA_VIOLATION: ValidationError,
  SENSITIVE_DATA: ValidationError,
  UPCAST_FAILED: UpcastError,
  KEYS_UNAVAILABLE: KeysUnavailableError,
  DOMAIN_REJECTION: DomainRejection,
  DECIDE_FAILED: DecideFailedError,
  CONCURRENCY: ConcurrencyError,
  SHARD_NOT_OWNED: ConcurrencyError,
  JOURNAL_UNAVAILABLE: JournalUnavailableError,
  OVERLOADED: OverloadedError,
  NOT_FOUND: NotFoundError,
  TIMEOUT: TimeoutError,
  INVALID_OPTION: InvalidOptionError,
  INVALID_DEFINITION: InvalidDefinitionError,
  STOPPED: StoppedError,
  WORKER_LOST: WorkerLostError,
  NATS_SERVER_UNSUPPORTED: NatsServerUnsupportedError,
  UNAUTHENTICATED: UnauthenticatedError,
  FORBIDDEN: ForbiddenError,
  RATE_LIMITED: RateLimitedError,
  NATS_AUTH: NatsAuthError,
  INTERNAL: InternalError,
});

/** The class of a code; undefined for a code this version does not know (from a newer peer). */
export function errorClassOf(code: string): TroupeErrorClass | undefined {
  return Object.hasOwn(ERROR_CLASSES, code) ? ERROR_CLASSES[code as ErrorCode] : undefined;
}

export interface WireError {
  code: ErrorCode;
  message: string;
  data: ErrorData;
  retryable: boolean;
}

export function toWire(e: unknown): WireError {
  if (e instanceof TroupeError) return { code: e.code, message: e.message, data: e.data, retryable: e.retryable };
  if (isWireError(e)) return e;
  const message = e instanceof Error ? e.message : String(e);
  return { code: 'INTERNAL', message, data: {}, retryable: false };
}

function isWireError(e: unknown): e is WireError {
  return typeof e === 'object' && e !== null && typeof (e as WireError).code === 'string' && typeof (e as WireError).message === 'string' && !(e instanceof Error);
}

/** Rebuild the right error class from its wire form. */
export function fromWire(w: WireError): TroupeError {
  // The stack would point here, not where the error happened: skip it (it is costly).
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return rebuild(w);
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/** The classes whose constructor is `(message, data)`; the others take their code or retryable too. */
type MessageDataClass = new (message: string, data: ErrorData) => TroupeError;

function rebuild(w: WireError): TroupeError {
  const { code, message, data, retryable } = w;
  const cls = errorClassOf(code);
  if (cls === undefined) {
    // A code from a newer peer: keep it, so isTroupeError(e, code) still works.
    return new TroupeError(code, message, data, { retryable });
  }
  if (cls === ValidationError) return new ValidationError(code as ValidationCode, message, data);
  if (cls === ConcurrencyError) return new ConcurrencyError(code as ConcurrencyCode, message, data);
  if (cls === KeysUnavailableError) return new KeysUnavailableError(message, data, undefined, retryable);
  if (cls === InternalError) return new InternalError(message, data, undefined, retryable);
  return new (cls as unknown as MessageDataClass)(message, data);
}

/** Structural check that survives thread and process boundaries. */
export function isTroupeError(e: unknown, code?: ErrorCode): e is TroupeError {
  if (typeof e !== 'object' || e === null) return false;
  const c = (e as { code?: unknown }).code;
  if (typeof c !== 'string' || typeof (e as { message?: unknown }).message !== 'string') return false;
  if (!(e instanceof TroupeError) && !('retryable' in e)) return false;
  return code === undefined || c === code;
}
