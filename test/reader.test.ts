import t from 'tap';
import fc from 'fast-check';
import { FrameReader } from '../src/protocol/reader.js';
import { encodeFrame } from '../src/protocol/frames.js';

interface Got { type: number; payload: string; zeroCopy: boolean }

/** Feeds chunks to a reader and records what it hands out. */
function run(chunks: Buffer[], opts: { max?: (t: number) => number; skip?: (t: number) => boolean } = {}) {
  const frames: Got[] = [];
  const errors: Array<[string, number, number]> = [];
  let current: Buffer | null = null;
  const reader = new FrameReader({
    maxLength: opts.max ?? (() => 1 << 20),
    skip: opts.skip,
    onFrame: (type, buf, start, end) => {
      frames.push({ type, payload: buf.subarray(start, end).toString('hex'), zeroCopy: buf === current });
    },
    onError: (kind, type, length) => { errors.push([kind, type, length]); },
  });
  for (const chunk of chunks) {
    current = chunk;
    reader.push(chunk);
  }
  return { frames, errors, reader };
}

const sample = [
  encodeFrame(0x10, Buffer.from('hello world')),
  encodeFrame(0x13, Buffer.alloc(8, 7)),
  encodeFrame(0x14),
  encodeFrame(0x7f, Buffer.from('unknown type, skipped when asked')),
  encodeFrame(0x12, Buffer.alloc(3000, 0xab)),
  encodeFrame(0x20, Buffer.from('12345678')),
];
const stream = Buffer.concat(sample);
const expected = run([stream]).frames.map(({ type, payload }) => ({ type, payload }));

t.test('a frame wholly inside one chunk is handed out in place', async (t) => {
  const { frames } = run([stream]);
  t.equal(frames.length, sample.length);
  t.ok(frames.every((f) => f.zeroCopy));
});

t.test('every two-way and three-way split gives the same frames', async (t) => {
  for (let i = 0; i <= stream.length; i++) {
    const { frames } = run([stream.subarray(0, i), stream.subarray(i)]);
    if (JSON.stringify(frames.map(({ type, payload }) => ({ type, payload }))) !== JSON.stringify(expected)) {
      t.fail(`split at ${i} differs`);
      return;
    }
  }
  for (let i = 0; i < 80; i++) {
    for (let j = i; j <= stream.length; j += 37) {
      const { frames } = run([stream.subarray(0, i), stream.subarray(i, j), stream.subarray(j)]);
      t.same(frames.map(({ type, payload }) => ({ type, payload })), expected, `split at ${i},${j}`);
    }
  }
});

t.test('one byte at a time gives the same frames', async (t) => {
  const chunks = [...stream].map((b) => Buffer.from([b]));
  t.same(run(chunks).frames.map(({ type, payload }) => ({ type, payload })), expected);
});

t.test('unknown types are skipped without being handed out', async (t) => {
  const skip = (type: number) => type === 0x7f;
  for (const chunks of [[stream], [...stream].map((b) => Buffer.from([b]))]) {
    const { frames } = run(chunks, { skip });
    t.same(frames.map((f) => f.type), [0x10, 0x13, 0x14, 0x12, 0x20]);
  }
});

t.test('a frame longer than its type allows is an error before any buffering', async (t) => {
  const big = Buffer.alloc(5);
  big[0] = 0x10;
  big.writeUInt32BE(0xffffffff, 1);
  const { frames, errors, reader } = run([Buffer.concat([sample[0], big])], { max: (type) => (type === 0x10 ? 100 : 10) });
  t.equal(frames.length, 1);
  t.same(errors, [['too-large', 0x10, 0xffffffff]]);
  t.equal(reader.bufferedBytes, 0, 'nothing buffered for the oversize frame');
  reader.push(sample[0]);
  t.ok(reader.failed, 'a failed reader ignores further input');
});

t.test('a truncated stream hands out only complete frames and buffers the rest', async (t) => {
  const cut = stream.subarray(0, stream.length - 3);
  const { frames, reader } = run([cut]);
  t.equal(frames.length, sample.length - 1);
  t.equal(reader.bufferedBytes, 8 - 3, 'the partial last frame body is held');
});

t.test('pausing keeps the rest of the chunk until resume', async (t) => {
  const frames: number[] = [];
  let pauseAfter = 2;
  const reader = new FrameReader({
    maxLength: () => 1 << 20,
    onFrame: (type) => { frames.push(type); return --pauseAfter !== 0; },
    onError: () => t.fail('no error expected'),
  });
  reader.push(stream);
  t.same(frames, [0x10, 0x13]);
  t.ok(reader.paused);
  reader.resume();
  t.same(frames, [0x10, 0x13, 0x14, 0x7f, 0x12, 0x20]);
});

t.test('property: any split of any valid stream round-trips', async (t) => {
  fc.assert(fc.property(
    fc.array(fc.record({ type: fc.integer({ min: 0, max: 255 }), payload: fc.uint8Array({ maxLength: 300 }) }), { maxLength: 12 }),
    fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 20 }),
    (frames, cuts) => {
      const bytes = Buffer.concat(frames.map((f) => encodeFrame(f.type, f.payload)));
      const chunks: Buffer[] = [];
      let pos = 0;
      for (let i = 0; pos < bytes.length; i++) {
        const n = cuts[i % cuts.length];
        chunks.push(bytes.subarray(pos, pos + n));
        pos += n;
      }
      const got = run(chunks).frames;
      return JSON.stringify(got.map((g) => [g.type, g.payload])) === JSON.stringify(frames.map((f) => [f.type, Buffer.from(f.payload).toString('hex')]));
    },
  ), { numRuns: 300 });
  t.pass('round-trips');
});

t.test('property: random bytes never throw and never buffer past the maximum', async (t) => {
  const max = 200;
  fc.assert(fc.property(fc.uint8Array({ maxLength: 2000 }), fc.integer({ min: 1, max: 50 }), (bytes, step) => {
    let peak = 0;
    const reader = new FrameReader({ maxLength: () => max, onFrame: () => {}, onError: () => {} });
    for (let i = 0; i < bytes.length; i += step) {
      reader.push(Buffer.from(bytes.subarray(i, i + step)));
      peak = Math.max(peak, reader.bufferedBytes);
    }
    return peak <= max + 5;
  }), { numRuns: 300 });
  t.pass('total and bounded');
});
