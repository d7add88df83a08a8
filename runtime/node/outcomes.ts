/** A worker's outcomes on their way to the main thread, in the wire.ts OUTCOME layout. */
import type { MessagePort } from 'node:worker_threads';
import type { CommandResult } from '../envelope.ts';
import type { WireError } from '../errors.ts';
import { OUTCOME_STRIDE, pushOutcome, pushStoredOutcome } from '../wire.ts';
import type { PendingCommit } from './cell.ts';

/** Outcomes per message at most (the main thread's side: DISPATCH_CHUNK in pool.ts). */
const OUTCOME_CHUNK = 256;

/**
 * Where outcomes go: collected as commands settle and posted to the main thread once per
 * event-loop turn, or as soon as OUTCOME_CHUNK of them are waiting, so many acknowledgements
 * share one message.
 */
export class OutcomeStream {
  private out: unknown[] = [];
  private scheduled = false;
  private readonly send = () => {
    this.scheduled = false;
    const out = this.out;
    if (out.length === 0) return;
    this.out = [];
    this.port.postMessage(out);
  };

  constructor(private readonly port: MessagePort) {}

  push(seq: number, error: WireError | null, result: CommandResult | null): void {
    pushOutcome(this.out, seq, error, result);
    this.schedule();
  }

  pushStored(seq: number, pc: PendingCommit, position: number, idPrefix: string): void {
    pushStoredOutcome(this.out, seq, pc.lastSeq, position, idPrefix, pc.wire);
    this.schedule();
  }

  private schedule(): void {
    // A full chunk goes at once, so the main thread answers it while this thread carries on.
    if (this.out.length >= OUTCOME_CHUNK * OUTCOME_STRIDE) this.send();
    else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.send);
    }
  }
}

