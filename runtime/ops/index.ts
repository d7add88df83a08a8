// `troupe/ops`: the operator's pieces (traces, health checks, metrics probes).
// (Minimal entry point; the public-surface work defines its final list.)
export { withConsumerSpan, startTracingSdk, shutdownTracingSdk, tracingConfigured, refreshTracing, TRACE_HEADER } from './tracing.ts';
export { registerConsumerProbe, registerHealthCheck, recordDeadLettered } from './metrics.ts';
export type { ConsumerProbe, HealthCheck, HealthCheckResult } from './metrics.ts';
export type { HealthReport } from './http.ts';
export type { LogLevel } from './log.ts';
