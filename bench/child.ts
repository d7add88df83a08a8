/**
 * A Troupe process of the suite:
 *
 *   node runtime/bin/run-ts.cjs bench/child.ts '{"mode":"ledger","spec":{…LedgerRunSpec}}'
 *       the in-process variant: Troupe.start here, both phases through node.send;
 *       prints `@@bench <LedgerRunResult>`
 *   node runtime/bin/run-ts.cjs bench/child.ts '{"mode":"serve","spec":{…ServeSpec}}'
 *       a node serving commands over NATS (the remote variant, and each node of the cluster
 *       step): prints `@@bench {"ready":true,…}`, then `@@bench {"stopped":true,…}` after reading
 *       `stop` on stdin or receiving SIGTERM (a graceful stop: the node hands its shards off)
 *   node runtime/bin/run-ts.cjs bench/child.ts '{"mode":"activation","spec":{…ActivationSpec}}'
 *       the activation experiment (bench/activation.ts); prints `@@bench <ActivationResult>`
 *
 * With `--cpu-prof` on the node command line and TROUPE_PROFILE_DIR in the environment, the
 * main thread and every worker leave a .cpuprofile behind (the process exits normally).
 */
import { runActivation, type ActivationSpec } from './activation.ts';
import { onStdinLine, readSpec, sendToParent } from './spawn.ts';
import { runLedgerInProcess, serveNode, type LedgerRunSpec, type ServeSpec } from './troupe.ts';

type ChildSpec =
  | { mode: 'ledger'; spec: LedgerRunSpec }
  | { mode: 'serve'; spec: ServeSpec }
  | { mode: 'activation'; spec: ActivationSpec };

async function main(): Promise<void> {
  const child = readSpec<ChildSpec>();
  switch (child.mode) {
    case 'ledger':
      sendToParent(await runLedgerInProcess(child.spec));
      return;
    case 'activation':
      sendToParent(await runActivation(child.spec));
      return;
    case 'serve': {
      const served = await serveNode(child.spec);
      sendToParent({ ready: true, node: served.node.nodeName, pid: process.pid });
      await new Promise<void>((resolve) => {
        onStdinLine((line) => {
          if (line === 'stop') resolve();
        });
        process.stdin.on('end', () => resolve());
        // SIGTERM stops the node as `troupe start` does: its shards are handed off before exit.
        process.once('SIGTERM', () => resolve());
      });
      const { stopMs } = await served.stop();
      sendToParent({ stopped: true, stopMs });
      return;
    }
    default:
      throw new Error(`unknown mode ${JSON.stringify((child as { mode: unknown }).mode)}`);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
