// Smoke test of the benchmark suite: `npm run bench -- --quick --json FILE` runs, every run's
// verification passes, and the variants the issue names are there. Never a speed assertion:
// speed belongs in the benchmark, not in tests.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const repo = fileURLToPath(new URL('..', import.meta.url));

interface Row {
  workload: string;
  variant: string;
  concurrency: number | null;
  accounts: number | null;
  cmdsPerSec: number | null;
  eventsPerSec: number | null;
  p50Ms: number | null;
  p99Ms: number | null;
  p999Ms: number | null;
  peakRssMb: number | null;
  jetstreamMessages: number | null;
  verifyOk: boolean | null;
}

describe('npm run bench -- --quick', () => {
  const dir = mkdtempSync(join(tmpdir(), 'troupe-bench-smoke-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('runs every quick variant and each one verifies', { timeout: 300_000 }, async () => {
    const file = join(dir, 'results.json');
    const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, ['--import', 'tsx', 'bench/run.ts', '--quick', '--json', file], {
        cwd: repo,
        timeout: 280_000,
        maxBuffer: 64 * 1024 * 1024,
      }, (err, out, errOut) => resolve({ code: err === null ? 0 : (typeof err.code === 'number' ? err.code : 1), stdout: out, stderr: errOut }));
    });
    expect(code, `bench exited with ${code}\nstdout:\n${stdout.slice(-6000)}\nstderr:\n${stderr.slice(-6000)}`).toBe(0);

    const report = JSON.parse(readFileSync(file, 'utf8')) as {
      machine: { cpuModel: string; cores: number; node: string; natsServer: string };
      rows: Row[];
      micro: { name: string; opsPerSec: number }[];
      failures: string[];
    };
    expect(report.machine.cores).toBeGreaterThan(0);
    expect(report.machine.node).toBe(process.version);
    expect(report.machine.natsServer).toMatch(/^v2\.\d+/);
    expect(report.failures).toEqual([]);

    for (const variant of ['in-process', 'remote', 'ceiling', 'plain']) {
      expect(report.rows.map((r) => r.variant), `a ${variant} row`).toContain(variant);
    }
    for (const r of report.rows) {
      expect(r.verifyOk, `${r.variant} C=${r.concurrency} verifies`).toBe(true);
      for (const key of ['workload', 'variant', 'concurrency', 'accounts', 'cmdsPerSec', 'eventsPerSec', 'p50Ms', 'p99Ms', 'p999Ms', 'peakRssMb', 'jetstreamMessages', 'verifyOk']) {
        expect(r, `${r.variant} has ${key}`).toHaveProperty(key);
      }
      expect(r.jetstreamMessages).toBeGreaterThan(0);
    }
    for (const c of [64, 4096]) {
      expect(report.rows.some((r) => r.variant === 'in-process' && r.concurrency === c), `in-process C=${c}`).toBe(true);
      expect(report.rows.some((r) => r.variant === 'plain' && r.concurrency === c), `plain C=${c}`).toBe(true);
    }
    expect(report.micro.length).toBeGreaterThan(0);
    expect(report.micro.every((m) => Number.isFinite(m.opsPerSec) && m.opsPerSec > 0)).toBe(true);
    expect(stdout).toMatch(/^Goals \(quick mode[^\n]*:$/m);
    expect(stdout).not.toMatch(/issue \d/i);
    expect(stdout).toContain('not a performance claim');
    const wide = stdout.split('\n').filter((line) => [...line].length > 120);
    expect(wide, 'terminal lines wider than 120 columns').toEqual([]);
  });
});
