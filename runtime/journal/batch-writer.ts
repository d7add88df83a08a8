/**
 * A msgpack writer specialised for commit batches: the hot path of every append.
 *
 * msgpackr is general and pays ~30 ns per value and ~90-200 ns per short string here
 * (bench/micro.ts); a commit batch is mostly short ASCII strings and small integers in a fixed
 * layout, which this writer puts straight into one reusable buffer. Payloads that are plain
 * JSON-like values (objects, arrays, strings, numbers, booleans, null) are written the same
 * way; anything else (Dates, Maps, typed arrays, bigints, ...) is handed to msgpackr, whose
 * output is a valid msgpack value. The output is plain msgpack: any decoder reads it.
 */
import { Packr } from 'msgpackr';
import { COMMIT, EVENT, type WireCommit, type WireEvent, type WireTimerOp } from '../wire.ts';

const fallback = new Packr({ useRecords: false, variableMapSize: true });

export class BatchWriter {
  private buf = Buffer.allocUnsafe(64 * 1024);
  private pos = 0;

  /** Start a new output. */
  reset(): void {
    this.pos = 0;
  }

  /** A copy of what was written since reset (the internal buffer is reused). */
  take(): Buffer {
    const out = Buffer.allocUnsafe(this.pos);
    this.buf.copy(out, 0, 0, this.pos);
    return out;
  }

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  array(n: number): void {
    this.room(5);
    const b = this.buf;
    if (n < 16) b[this.pos++] = 0x90 | n;
    else if (n < 0x10000) { b[this.pos] = 0xdc; b.writeUInt16BE(n, this.pos + 1); this.pos += 3; }
    else { b[this.pos] = 0xdd; b.writeUInt32BE(n, this.pos + 1); this.pos += 5; }
  }

  private map(n: number): void {
    this.room(5);
    const b = this.buf;
    if (n < 16) b[this.pos++] = 0x80 | n;
    else if (n < 0x10000) { b[this.pos] = 0xde; b.writeUInt16BE(n, this.pos + 1); this.pos += 3; }
    else { b[this.pos] = 0xdf; b.writeUInt32BE(n, this.pos + 1); this.pos += 5; }
  }

  nil(): void {
    this.room(1);
    this.buf[this.pos++] = 0xc0;
  }

  number(v: number): void {
    this.room(9);
    const b = this.buf;
    if (Number.isInteger(v) && v >= 0 && v <= 0xffffffff) {
      if (v < 128) b[this.pos++] = v;
      else if (v < 0x100) { b[this.pos] = 0xcc; b[this.pos + 1] = v; this.pos += 2; }
      else if (v < 0x10000) { b[this.pos] = 0xcd; b.writeUInt16BE(v, this.pos + 1); this.pos += 3; }
      else { b[this.pos] = 0xce; b.writeUInt32BE(v, this.pos + 1); this.pos += 5; }
    } else if (Number.isInteger(v) && v < 0 && v >= -0x80000000) {
      if (v >= -32) b[this.pos++] = v & 0xff;
      else { b[this.pos] = 0xd2; b.writeInt32BE(v, this.pos + 1); this.pos += 5; }
    } else {
      b[this.pos] = 0xcb;
      b.writeDoubleBE(v, this.pos + 1);
      this.pos += 9;
    }
  }

  string(s: string): void {
    const n = s.length;
    this.room(5 + n * 3);
    const b = this.buf;
    // Optimistically write ASCII after a 1-byte (fixstr) or 2-byte (str8) header.
    const header = n < 32 ? 1 : n < 256 ? 2 : 0;
    if (header !== 0) {
      let at = this.pos + header;
      let i = 0;
      for (; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) break;
        b[at++] = c;
      }
      if (i === n) {
        if (header === 1) b[this.pos] = 0xa0 | n;
        else { b[this.pos] = 0xd9; b[this.pos + 1] = n; }
        this.pos = at;
        return;
      }
    }
    const len = Buffer.byteLength(s, 'utf8');
    if (len < 32) b[this.pos++] = 0xa0 | len;
    else if (len < 0x100) { b[this.pos] = 0xd9; b[this.pos + 1] = len; this.pos += 2; }
    else if (len < 0x10000) { b[this.pos] = 0xda; b.writeUInt16BE(len, this.pos + 1); this.pos += 3; }
    else { b[this.pos] = 0xdb; b.writeUInt32BE(len, this.pos + 1); this.pos += 5; }
    this.pos += b.write(s, this.pos, len, 'utf8');
  }

  stringOrNil(s: string | null): void {
    if (s === null) this.nil();
    else this.string(s);
  }

  /** Any payload value. */
  value(v: unknown): void {
    switch (typeof v) {
      case 'string': this.string(v); return;
      case 'number': this.number(v); return;
      case 'boolean': this.room(1); this.buf[this.pos++] = v ? 0xc3 : 0xc2; return;
      case 'undefined': this.nil(); return;
      case 'object':
        if (v === null) { this.nil(); return; }
        if (Array.isArray(v)) {
          this.array(v.length);
          for (const x of v) this.value(x);
          return;
        }
        if (Object.getPrototypeOf(v) === Object.prototype) {
          const o = v as Record<string, unknown>;
          let n = 0;
          for (const k in o) if (o[k] !== undefined) n++;
          this.map(n);
          for (const k in o) {
            const x = o[k];
            if (x === undefined) continue;
            this.string(k);
            this.value(x);
          }
          return;
        }
        break;
      default:
        break;
    }
    const bytes = fallback.pack(v);
    this.room(bytes.length);
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
  }
}


const writer = new BatchWriter();

/** `[format, idPrefix, ...commits]` in the layout codec.ts documents. */
export function writeCommitBatch(format: number, idPrefix: string, commits: readonly WireCommit[]): Buffer {
  beginCommitBatch(format, idPrefix, commits.length);
  for (const c of commits) {
    writeCommit(c[COMMIT.commandId], c[COMMIT.type], c[COMMIT.id], c[COMMIT.correlationId], c[COMMIT.userId], c[COMMIT.timestamp], c[COMMIT.source], c[COMMIT.firstSeq], c[COMMIT.events], c[COMMIT.causationId] ?? null, c[COMMIT.timers] ?? null);
  }
  return endCommitBatch();
}

/**
 * The same batch written commit by commit from the caller's own fields, so that no commit
 * tuple is built: begin, `count` × writeCommit, end (synchronously, on one thread).
 */
export function beginCommitBatch(format: number, idPrefix: string, count: number): void {
  const w = writer;
  w.reset();
  w.array(count + 2);
  w.number(format);
  w.string(idPrefix);
}

export function writeCommit(
  commandId: string, aggregateType: string, aggregateId: string, correlationId: string | null, userId: string | null,
  timestampMs: number, source: string, firstSequence: number, events: readonly WireEvent[], causationId: string | null,
  timers: readonly WireTimerOp[] | null = null,
): void {
  const w = writer;
  w.array(timers === null ? 10 : 11);
  w.string(commandId);
  w.string(aggregateType);
  w.string(aggregateId);
  w.stringOrNil(correlationId);
  w.stringOrNil(userId);
  w.number(timestampMs);
  w.string(source);
  w.number(firstSequence);
  w.array(events.length);
  for (const e of events) {
    w.array(4);
    const id = e[EVENT.id];
    if (typeof id === 'number') w.number(id);
    else w.string(id);
    w.string(e[EVENT.type]);
    w.number(e[EVENT.version]);
    w.value(e[EVENT.payload]);
  }
  w.stringOrNil(causationId);
  if (timers !== null) w.value(timers);
}

export function endCommitBatch(): Buffer {
  return writer.take();
}
