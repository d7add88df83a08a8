// `troupe/testing`: the given/when/then test kit, and a real nats-server for a user's own tests.
// (Minimal entry point; the public-surface work defines its final list.)
export { given, testActor, Given, Scenario, TestActor, msgpackrTestCodec, DEFAULT_TEST_NOW } from './testkit.ts';
export type { TestKitOptions, TestCodec, RecordedEvent, RejectionMatcher, RestartOptions, GivenEvent } from './testkit.ts';
export { startNatsServer, startNatsCluster, findNatsServer, ENSURE_NATS_COMMAND } from './nats-server.ts';
export type { NatsServerHandle, StartNatsServerOptions, NatsCluster } from './nats-server.ts';
