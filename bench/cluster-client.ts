/**
 * The clients of the cluster step, in their own process: one TroupeClient against the nodes of
 * a cluster (each command goes to its shard's owner by subject).
 *
 *   node runtime/bin/run-ts.cjs bench/cluster-client.ts '<ClusterClientSpec as JSON>'
 *
 * mode `steady`: phase 1 (OpenAccount for every account) and phase 2 (the generated commands,
 *   closed loop at C), as the remote variant; prints `@@bench <ClusterSteadyClientResult>`.
 * mode `timeline`: phase 1, then the generated commands over and over (command i is
 *   commands[i mod n]), closed loop at C, until `stop` arrives on stdin; completions are counted
 *   per bucket of `bucketMs` from the start of the load. Prints `@@bench {"loading":true,"t0":…}`
 *   when the load starts (t0: Date.now()), then `@@bench <TimelineClientResult>`.
 *
 * Both write the commandId of every acknowledged command (phases 1 and 2), one a line, to
 * `ackFile`, so that the parent can check each is in the log exactly once.
 */
import { writeFileSync } from 'node:fs';
import { TroupeClient } from '../runtime/remote/client.ts';
import { isTroupeError } from '../runtime/errors.ts';
import type { CommandResult } from '../runtime/envelope.ts';
import { announcePhase, onStdinLine, readSpec, sendToParent } from './spawn.ts';
import { driveLedger, phase2Of, type PhaseResult } from './troupe.ts';
import type { ClusterClientSpec, ClusterSteadyClientResult, TimelineClientResult } from './cluster.ts';
import { accountId, generateCommands, runClosedLoop, summarizeLatencies, type ClosedLoopResult } from './workload.ts';

function phaseOf(r: ClosedLoopResult): PhaseResult {
  return {
    durationMs: r.durationMs,
    perSec: r.cmdsPerSec,
    accepted: r.accepted,
    rejected: r.rejected,
    errors: r.errors,
    ...(r.firstError === undefined ? {} : { firstError: String(r.firstError) }),
  };
}

async function main(): Promise<void> {
  const spec = readSpec<ClusterClientSpec>();
  const commands = generateCommands(spec.accounts, spec.commandCount, spec.seed);
  const client = await TroupeClient.connect({
    servers: spec.servers,
    subjectPrefix: spec.subjectPrefix,
    timeoutMs: spec.timeoutMs,
    retry: spec.retry,
  });
  const acked: string[] = [];
  const send = (t: string, id: string, c: string, p: unknown): Promise<CommandResult> =>
    client.send(t, id, c, p).then((r) => {
      acked.push(r.commandId);
      return r;
    });
  try {
    if (spec.mode === 'steady') {
      let cpuAt: NodeJS.CpuUsage | undefined;
      let cpuSeconds = 0;
      const { phase1, phase2 } = await driveLedger(send, spec.accounts, commands, spec.concurrency, (phase) => {
        if (phase === 'commands') cpuAt = process.cpuUsage();
        if (phase === 'commands-done') {
          const u = process.cpuUsage(cpuAt);
          cpuSeconds = (u.user + u.system) / 1e6;
        }
        announcePhase(phase);
      });
      writeFileSync(spec.ackFile, acked.join('\n'));
      const result: ClusterSteadyClientResult = { phase1: phaseOf(phase1), phase2: phase2Of(phase2), cpuSeconds, acked: acked.length };
      sendToParent(result);
      return;
    }

    // ── timeline ──
    const ids = Array.from({ length: spec.accounts }, (_, i) => accountId(i));
    announcePhase('open');
    const phase1 = await runClosedLoop(ids, spec.concurrency, (id) => send('Account', id, 'OpenAccount', {}).then(() => 'accepted' as const));
    let stop = false;
    onStdinLine((line) => {
      if (line === 'stop') stop = true;
    });
    process.stdin.on('end', () => {
      stop = true;
    });
    const counts: number[] = [];
    const errorCounts: number[] = [];
    const bump = (a: number[], at: number): void => {
      const b = Math.floor((at - t0) / spec.bucketMs);
      while (a.length <= b) a.push(0);
      a[b]!++;
    };
    const latencies: number[] = [];
    let next = 0;
    let accepted = 0;
    let rejected = 0;
    let errors = 0;
    let firstError: string | undefined;
    const n = commands.length;
    const caller = async (): Promise<void> => {
      while (!stop) {
        const c = commands[next++ % n]!;
        const t = Date.now();
        try {
          await send('Account', ids[c.accountIndex]!, c.type, { amount: c.amount });
          accepted++;
        } catch (e) {
          if (isTroupeError(e, 'DOMAIN_REJECTION')) rejected++;
          else {
            errors++;
            firstError ??= e instanceof Error ? `${e.name}: ${e.message}` : String(e);
            bump(errorCounts, Date.now());
            continue;
          }
        }
        const done = Date.now();
        latencies.push(done - t);
        bump(counts, done);
      }
    };
    announcePhase('load');
    const t0 = Date.now();
    sendToParent({ loading: true, t0 });
    await Promise.all(Array.from({ length: spec.concurrency }, caller));
    const durationMs = Date.now() - t0;
    announcePhase('load-done');
    writeFileSync(spec.ackFile, acked.join('\n'));
    const lat = summarizeLatencies(Float64Array.from(latencies));
    const result: TimelineClientResult = {
      phase1: phaseOf(phase1),
      t0,
      bucketMs: spec.bucketMs,
      counts,
      errorCounts,
      sent: next,
      accepted,
      rejected,
      errors,
      ...(firstError === undefined ? {} : { firstError }),
      durationMs,
      p50Ms: lat.p50Ms,
      p99Ms: lat.p99Ms,
      maxMs: lat.maxMs,
      acked: acked.length,
    };
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
