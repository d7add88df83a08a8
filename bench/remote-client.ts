/**
 * The clients of the remote variant, in their own process:
 *
 *   node runtime/bin/run-ts.cjs bench/remote-client.ts '{"servers":"nats://…","subjectPrefix":"…","accounts":10000,
 *     "commandCount":100000,"seed":42,"concurrency":4096}'
 *
 * Phase 1 (OpenAccount for every account) and phase 2 (the generated commands, closed loop at C)
 * through one TroupeClient over NATS. Prints `@@bench <json>` (RemoteClientResult) on stdout;
 * phases are announced on stderr (`@@phase commands`, `@@phase commands-done`) so the parent
 * can sample the node, this process and nats-server around phase 2.
 */
import { TroupeClient } from '../runtime/remote/client.ts';
import { announcePhase, readSpec, sendToParent } from './spawn.ts';
import { driveLedger, phase2Of, type PhaseResult, type RemoteClientResult, type RemoteClientSpec } from './troupe.ts';
import { generateCommands } from './workload.ts';

async function main(): Promise<void> {
  const spec = readSpec<RemoteClientSpec>();
  const commands = generateCommands(spec.accounts, spec.commandCount, spec.seed);
  const client = await TroupeClient.connect({ servers: spec.servers, subjectPrefix: spec.subjectPrefix, timeoutMs: 120_000 });
  let cpuAt: NodeJS.CpuUsage | undefined;
  let cpuSeconds = 0;
  try {
    const { phase1, phase2 } = await driveLedger(
      (t, id, c, p) => client.send(t, id, c, p),
      spec.accounts,
      commands,
      spec.concurrency,
      (phase) => {
        if (phase === 'commands') cpuAt = process.cpuUsage();
        if (phase === 'commands-done') {
          const u = process.cpuUsage(cpuAt);
          cpuSeconds = (u.user + u.system) / 1e6;
        }
        announcePhase(phase);
      },
    );
    const p1: PhaseResult = {
      durationMs: phase1.durationMs,
      perSec: phase1.cmdsPerSec,
      accepted: phase1.accepted,
      rejected: phase1.rejected,
      errors: phase1.errors,
      ...(phase1.firstError === undefined ? {} : { firstError: String(phase1.firstError) }),
    };
    const result: RemoteClientResult = { phase1: p1, phase2: phase2Of(phase2), cpuSeconds };
    sendToParent(result);
  } finally {
    await client.close();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
