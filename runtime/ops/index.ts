// `troupe/ops`: what an operator wires up around a node or a consumer process: OpenTelemetry
// tracing, health checks and consumer probes behind /health and /ready, dead-letter metrics,
// the endpoints of a process that runs consumers without a node (serveConsumerOps),
// and master-key rotation (what `troupe keys rotate|retire` runs).

export { startTracingSdk, shutdownTracingSdk, withConsumerSpan } from './tracing.ts';
export { registerHealthCheck, registerConsumerProbe, recordDeadLettered } from './metrics.ts';
export type { HealthCheck, HealthCheckResult, ConsumerProbe, ConsumerGauges } from './metrics.ts';
export { serveConsumerOps } from './consumer-ops.ts';
export type { ConsumerOpsOptions, ConsumerOpsServer } from './consumer-ops.ts';
export type { HealthReport } from './http.ts';
export type { LogLevel } from './log.ts';
export { rotateMasterKey, retireMasterKey } from '../contracts/master-rotation.ts';
export type { MasterKeyAdminOptions, RotateMasterKeyOptions, MasterKeyChange } from '../contracts/master-rotation.ts';
