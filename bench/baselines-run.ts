/**
 * Runs the two baselines on a throwaway nats-server and reports them:
 *
 *   node --import tsx bench/baselines-run.ts [--quick]
 *
 * Full: 10,000 accounts, 100,000 commands; quick: 1,000 accounts, 5,000 commands. Ceiling with
 * 1 and 2 connections (best kept), plain at C = 64 and C = 4096. Writes baselines.json,
 * baselines.svg and baselines.md to .troupe/bench/ in the repository (git ignores .troupe/).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ceilingRow, pickBestCeiling, plainRow, runCeiling, runPlain, type CeilingResult } from './baselines.ts';
import { startBenchNats } from './nats.ts';
import { machineInfo, printTable, steps, writeJson, writeResultsMd, writeSvgChart, type BenchRow } from './report.ts';
import { REPO_DIR } from './spawn.ts';
import { expectedOutcome, generateCommands } from './workload.ts';

const quick = process.argv.includes('--quick');
const accounts = quick ? 1_000 : 10_000;
const commandCount = quick ? 5_000 : 100_000;
const concurrencies = [64, 4096];
const outDir = join(REPO_DIR, '.troupe', 'bench');
mkdirSync(outDir, { recursive: true });
const outJson = join(outDir, 'baselines.json');
const outSvg = join(outDir, 'baselines.svg');
const outMd = join(outDir, 'baselines.md');

async function main(): Promise<void> {
  const machine = machineInfo();
  const commands = generateCommands(accounts, commandCount, 42);
  const expected = expectedOutcome(accounts, commands);
  const step = steps(2 + concurrencies.length);
  const rows: BenchRow[] = [];

  const nats = await startBenchNats();
  try {
    // The ceiling publishes as many events as the workload stores: accounts + accepted.
    const ceilingRuns: CeilingResult[] = [];
    for (const connections of [1, 2] as const) {
      const p = step(`ceiling, ${connections} connection${connections > 1 ? 's' : ''}, ${expected.events.toLocaleString('en-US')} msgs`);
      try {
        const r = await runCeiling({ url: nats.url, events: expected.events, connections, inFlight: 4000, size: 150, serverPid: nats.pid });
        ceilingRuns.push(r);
        p.done(`${Math.round(r.msgsPerSec).toLocaleString('en-US')} msgs/s`);
      } catch (err) {
        p.fail(err);
        throw err;
      }
    }
    rows.push(ceilingRow(pickBestCeiling(ceilingRuns)));

    for (const concurrency of concurrencies) {
      const label = `plain C=${concurrency}, ${accounts.toLocaleString('en-US')} accounts, ${commandCount.toLocaleString('en-US')} commands`;
      const p = step(label);
      try {
        const r = await runPlain({
          url: nats.url,
          accounts,
          commands,
          concurrency,
          serverPid: nats.pid,
          onPhase: (phase) => p.update(`${label}: ${phase}`),
        });
        rows.push(plainRow(r));
        p.done(`${Math.round(r.cmdsPerSec).toLocaleString('en-US')} cmds/s, verify ${r.verifyOk ? 'ok' : 'FAILED'}`);
      } catch (err) {
        p.fail(err);
        throw err;
      }
    }
  } finally {
    await nats.stop();
  }

  process.stdout.write(`\n${machine.cpuModel} × ${machine.cores}, Node ${machine.node}, nats-server ${machine.natsServer}${quick ? ' (quick)' : ''}\n\n`);
  printTable(rows);
  const report = { machine, rows, micro: [] };
  await writeJson(outJson, report);
  await writeSvgChart(outSvg, rows, `Baselines: ledger workload, ${accounts.toLocaleString('en-US')} accounts, ${commandCount.toLocaleString('en-US')} commands`);
  await writeResultsMd(outMd, report);
  process.stdout.write(`\nwrote ${outJson}, ${outSvg}, ${outMd}\n`);
  if (rows.some((r) => r.verifyOk === false)) process.exitCode = 1;
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
