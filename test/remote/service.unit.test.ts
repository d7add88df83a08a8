import { describe, expect, it } from 'vitest';
import { encode } from '../../runtime/journal/codec.ts';
import { peekCount } from '../../runtime/remote/service.ts';
import { FLAT, FLAT_2, PROTOCOL, REQUEST_STRIDE, REQUEST_STRIDE_2 } from '../../runtime/wire.ts';

describe('peekCount', () => {
  it('reads the number of commands of a request from its header, for every layout and array size', () => {
    for (const n of [1, 2, 15, 16, 1_000, 7_000]) {
      expect(peekCount(encode([FLAT, new Array(n * REQUEST_STRIDE).fill(null)])), `FLAT ${n}`).toBe(n);
      expect(peekCount(encode([FLAT_2, new Array(n * REQUEST_STRIDE_2).fill('x')])), `FLAT_2 ${n}`).toBe(n);
      expect(peekCount(encode([PROTOCOL, new Array(n).fill({ type: 'T' })])), `PROTOCOL ${n}`).toBe(n);
    }
  });

  it('says 1 for bytes that are not a command request', () => {
    expect(peekCount(encode({ not: 'a request' }))).toBe(1);
    expect(peekCount(encode([99, [1, 2, 3]]))).toBe(1);
    expect(peekCount(new Uint8Array([0x92]))).toBe(1);
  });
});
