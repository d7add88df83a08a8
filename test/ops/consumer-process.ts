// Start and stop test/fixtures/ops-consumer.ts: a process that runs consumers and a projection
// without a node and serves their /health, /ready and /metrics.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { REPO_ROOT } from '../../runtime/testing/nats-server.ts';

const script = fileURLToPath(new URL('../fixtures/ops-consumer.ts', import.meta.url));

/** Start the consumer process; resolves with its URL once it printed it. */
export async function startConsumerProcess(natsUrl: string, env: { stream: string; subjectPrefix: string }, dataDir: string): Promise<{ child: ChildProcess; url: string; shared: boolean }> {
  const child = spawn(process.execPath, ['--import', 'tsx', script, natsUrl, env.stream, env.subjectPrefix, dataDir], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const lines = createInterface({ input: child.stdout! });
  const first = await new Promise<string>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`the consumer process printed nothing within 30 s; stderr: ${stderr}`)), 30_000);
    lines.once('line', (l) => { clearTimeout(t); resolve(l); });
    child.once('exit', (code) => { clearTimeout(t); reject(new Error(`the consumer process exited with ${code}: ${stderr}`)); });
  });
  return { child, ...(JSON.parse(first) as { url: string; shared: boolean }) };
}

export async function stopProcess(child: ChildProcess | undefined): Promise<void> {
  if (child === undefined || child.exitCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(t);
}

