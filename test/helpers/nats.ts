// Test helpers for anything that needs a real nats-server.
//
//   const nats = await startNatsServer();            // random port, fresh temp store
//   const nc = await connect({ servers: nats.url });
//   ...
//   await nc.close(); await nats.stop();
//
// or, per file: `const nats = useNatsServer();` at the top of a describe block, then
// `nats.url` inside tests (started in beforeAll, stopped in afterAll).
//
// When no nats-server >= 2.10 is installed these throw, so tests FAIL (never skip) with the
// command that installs one: `npx troupe ensure-nats` (npm test runs it).

import { afterAll, beforeAll } from 'vitest';
import { makeTempDir, startNatsServer, type NatsServerHandle, type StartNatsServerOptions } from '../../runtime/testing/nats-server.ts';

export {
  startNatsServer, startNatsCluster, findNatsServer, freePorts, makeTempDir, REPO_ROOT, DEFAULT_NATS_CONFIG, ENSURE_NATS_COMMAND,
} from '../../runtime/testing/nats-server.ts';
export type { NatsServerHandle, NatsCluster, StartNatsServerOptions } from '../../runtime/testing/nats-server.ts';

/**
 * A fresh directory under os.tmpdir(), removed when the test process ends (vitest ends its
 * fork workers with SIGTERM; runtime/testing/nats-server.ts cleans up on that signal and on 'exit').
 */
export function tempDir(prefix = 'troupe-test-'): string {
  return makeTempDir(prefix);
}

/**
 * Start a nats-server in beforeAll and stop it in afterAll. The returned object forwards to the
 * running server's handle (url, port, stop(), kill(), restart(), ...); touch it only inside
 * tests and hooks.
 */
export function useNatsServer(opts: StartNatsServerOptions = {}): NatsServerHandle {
  let handle: NatsServerHandle | undefined;
  beforeAll(async () => {
    handle = await startNatsServer(opts);
  });
  afterAll(async () => {
    await handle?.stop();
  });
  return new Proxy({} as NatsServerHandle, {
    get(_t, prop) {
      if (!handle) throw new Error('useNatsServer(): the server is started in beforeAll; use it inside tests or hooks');
      const v = Reflect.get(handle, prop, handle) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(handle) : v;
    },
  });
}
