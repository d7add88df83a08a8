// `troupe/testing`: test an actor without a node (given/when/then, testActor with restart()),
// check event contracts, and start a real nats-server for your own integration tests.

export { given, testActor, DEFAULT_TEST_NOW, msgpackrTestCodec } from './testkit.ts';
export type {
  Given, Scenario, TestActor, TestKitOptions, TestCodec, GivenEvent, RecordedEvent, RejectionMatcher, RestartOptions, TimerChange, TestTimer,
} from './testkit.ts';

// Contract tests: is this payload valid for that event or command version; what does an old
// event or state look like once upcast to the current definition.
export { validateEventSchema, validateCommandSchema, upcastEvent, upcastState } from '../contracts/contract.ts';
export type { SchemaCheck, SchemaProblem } from '../contracts/contract.ts';

// A real nats-server (>= 2.10) on a random loopback port with a temporary store, stopped when the
// process exits. Found on $TROUPE_NATS_SERVER, PATH or the app's .troupe/bin; `npx troupe
// ensure-nats` fetches one.
export { startNatsServer } from './nats-server.ts';
export type { NatsServerHandle, StartNatsServerOptions } from './nats-server.ts';
