// A real headless Chromium driven over the DevTools protocol through a pipe
// (--remote-debugging-pipe: fd 3 carries commands in, fd 4 answers and events out, each message
// JSON ending with a NUL byte). No browser-automation package needed; Node 20's WebSocket is
// behind a flag, the pipe is not.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';

export const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage', '--hide-scrollbars', '--mute-audio',
];

/** Debian's chromium, or CHROMIUM_PATH; null when there is none. */
export function findChromium(): string | null {
  const candidates = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'].filter((p): p is string => typeof p === 'string' && p !== '');
  return candidates.find((p) => existsSync(p)) ?? null;
}

export interface ConsoleEntry { level: string; text: string; source: string }

type Listener = (params: Record<string, unknown>, sessionId: string | undefined) => void;

export class Browser {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; method: string }>();
  private readonly listeners = new Map<string, Set<Listener>>();
  private buffer = '';

  private constructor(private readonly child: ChildProcess, private readonly profile: string) {
    const out = child.stdio[4] as Readable;
    out.setEncoding('utf8');
    out.on('data', (chunk: string) => {
      this.buffer += chunk;
      let end;
      while ((end = this.buffer.indexOf('\0')) >= 0) {
        const text = this.buffer.slice(0, end);
        this.buffer = this.buffer.slice(end + 1);
        this.dispatch(JSON.parse(text) as { id?: number; result?: unknown; error?: { message: string }; method?: string; params?: Record<string, unknown>; sessionId?: string });
      }
    });
    child.on('exit', () => {
      for (const p of this.pending.values()) p.reject(new Error(`chromium exited during ${p.method}`));
      this.pending.clear();
    });
  }

  static async launch(path: string): Promise<Browser> {
    const profile = mkdtempSync(join(tmpdir(), 'troupe-chromium-'));
    const child = spawn(path, [...CHROMIUM_FLAGS, `--user-data-dir=${profile}`, '--remote-debugging-pipe', 'about:blank'],
      { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    const b = new Browser(child, profile);
    try {
      await b.send('Browser.getVersion', {}, undefined, 30_000);
    } catch (e) {
      await b.close();
      throw new Error(`chromium did not start: ${(e as Error).message}\n${stderr.slice(-2000)}`);
    }
    return b;
  }

  private dispatch(m: { id?: number; result?: unknown; error?: { message: string }; method?: string; params?: Record<string, unknown>; sessionId?: string }): void {
    if (m.id !== undefined) {
      const p = this.pending.get(m.id);
      if (p === undefined) return;
      this.pending.delete(m.id);
      if (m.error !== undefined) p.reject(new Error(`${p.method}: ${m.error.message}`));
      else p.resolve(m.result);
      return;
    }
    if (m.method !== undefined) for (const l of this.listeners.get(m.method) ?? []) l(m.params ?? {}, m.sessionId);
  }

  send<T = Record<string, unknown>>(method: string, params: Record<string, unknown> = {}, sessionId?: string, timeoutMs = 15_000): Promise<T> {
    const id = this.nextId++;
    const input = this.child.stdio[3] as Writable;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${method} got no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        method,
        resolve: (v) => { clearTimeout(timer); resolve(v as T); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
      input.write(`${JSON.stringify({ id, method, params, ...(sessionId !== undefined ? { sessionId } : {}) })}\0`);
    });
  }

  on(method: string, listener: Listener): () => void {
    let set = this.listeners.get(method);
    if (set === undefined) this.listeners.set(method, (set = new Set()));
    set.add(listener);
    return () => set.delete(listener);
  }

  /** A new tab, 1280×900, with console and exceptions recorded. */
  async newPage(): Promise<Page> {
    const { targetId } = await this.send<{ targetId: string }>('Target.createTarget', { url: 'about:blank' });
    const { sessionId } = await this.send<{ sessionId: string }>('Target.attachToTarget', { targetId, flatten: true });
    const page = new Page(this, sessionId);
    await page.init();
    return page;
  }

  async close(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      await this.send('Browser.close', {}, undefined, 5_000).catch(() => {});
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => { this.child.kill('SIGKILL'); resolve(); }, 5_000);
        this.child.once('exit', () => { clearTimeout(t); resolve(); });
        if (this.child.exitCode !== null) { clearTimeout(t); resolve(); }
      });
    }
    rmSync(this.profile, { recursive: true, force: true });
  }
}

export class Page {
  /** console.* calls, uncaught exceptions and browser log entries (failed loads, CSP refusals...). */
  readonly console: ConsoleEntry[] = [];

  constructor(private readonly browser: Browser, private readonly sessionId: string) {
    browser.on('Runtime.consoleAPICalled', (p, s) => {
      if (s !== sessionId) return;
      const args = (p.args as { value?: unknown; description?: string }[]).map((a) => a.description ?? String(a.value));
      this.console.push({ level: String(p.type), text: args.join(' '), source: 'console' });
    });
    browser.on('Runtime.exceptionThrown', (p, s) => {
      if (s !== sessionId) return;
      const d = p.exceptionDetails as { text: string; exception?: { description?: string } };
      this.console.push({ level: 'error', text: d.exception?.description ?? d.text, source: 'exception' });
    });
    browser.on('Log.entryAdded', (p, s) => {
      if (s !== sessionId) return;
      const e = p.entry as { level: string; text: string; source: string; url?: string };
      this.console.push({ level: e.level, text: `${e.text}${e.url !== undefined ? ` (${e.url})` : ''}`, source: e.source });
    });
  }

  send<T = Record<string, unknown>>(method: string, params: Record<string, unknown> = {}): Promise<T> {
    return this.browser.send<T>(method, params, this.sessionId);
  }

  async init(): Promise<void> {
    await Promise.all([this.send('Page.enable'), this.send('Runtime.enable'), this.send('Log.enable')]);
    await this.send('Emulation.setDeviceMetricsOverride', { width: 1280, height: 900, deviceScaleFactor: 1, mobile: false });
  }

  /** Navigate and wait for the load event (or, for a change of the #fragment alone, for the same-document navigation). */
  async goto(url: string, timeoutMs = 15_000): Promise<void> {
    const offs: (() => void)[] = [];
    let timer: NodeJS.Timeout | undefined;
    const done = new Promise<void>((resolve, reject) => {
      const finish = (_p: unknown, s: string | undefined) => { if (s === this.sessionId) resolve(); };
      offs.push(this.browser.on('Page.loadEventFired', finish), this.browser.on('Page.navigatedWithinDocument', finish));
      timer = setTimeout(() => reject(new Error(`${url} did not load within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      const r = await this.send<{ errorText?: string }>('Page.navigate', { url });
      if (r.errorText !== undefined) throw new Error(`navigating to ${url}: ${r.errorText}`);
      await done;
    } finally {
      clearTimeout(timer);
      for (const off of offs) off();
    }
  }

  /** Evaluate an expression in the page (promises awaited) and return its value. */
  async eval<T = unknown>(expression: string): Promise<T> {
    const r = await this.send<{ result: { value?: T }; exceptionDetails?: { text: string; exception?: { description?: string } } }>('Runtime.evaluate',
      { expression, awaitPromise: true, returnByValue: true });
    if (r.exceptionDetails !== undefined) throw new Error(`in the page: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
    return r.result.value as T;
  }

  /** Wait until `expression` is truthy in the page; returns its value. */
  async waitFor<T = unknown>(expression: string, timeoutMs = 15_000, what = expression): Promise<T> {
    const until = Date.now() + timeoutMs;
    let last: unknown;
    for (;;) {
      try {
        last = await this.eval<T>(expression);
        if (last) return last as T;
      } catch (e) {
        last = e;
      }
      if (Date.now() > until) throw new Error(`the page never showed ${what} within ${timeoutMs} ms (last: ${String((last as Error)?.message ?? last)})`);
      await new Promise((r) => setTimeout(r, 150));
    }
  }

  async click(selector: string): Promise<void> {
    await this.eval(`(() => { const e = document.querySelector(${JSON.stringify(selector)}); if (!e) throw new Error('no element ${selector.replace(/'/g, '')}'); e.click(); return true; })()`);
  }

  async screenshot(): Promise<Buffer> {
    const { data } = await this.send<{ data: string }>('Page.captureScreenshot', { format: 'png', captureBeyondViewport: true });
    return Buffer.from(data, 'base64');
  }
}
