// Output buffers are reused once a socket has written them (src/protocol/outbound.ts): a
// buffer given back too early would send one message's bytes in place of another's. Bursts of
// distinct bodies, larger than one 256 KiB buffer per turn, through the relay to two
// receivers (relay and clients share one pool here, in one process): every byte must arrive.
import { createHash } from 'node:crypto';
import t from 'tap';
import type { ReceivedMessage } from '../src/client/client.js';
import { connectClient, startRelay, waitForCount } from './helpers.js';

/** Body i: its index, then bytes derived from it, so any mix-up of two bodies shows. */
function body(i: number, size: number): Buffer {
  const out = Buffer.alloc(size);
  out.writeUInt32BE(i, 0);
  let block = createHash('sha256').update(String(i)).digest();
  for (let o = 4; o < size; o += block.length) {
    block.copy(out, o, 0, Math.min(block.length, size - o));
    block = createHash('sha256').update(block).digest();
  }
  return out;
}

t.test('bursts bigger than an output buffer arrive byte for byte', async (t) => {
  const relay = await startRelay();
  t.teardown(() => relay.close());
  const receivers = await Promise.all([0, 1].map(() => connectClient(relay, { raw: true, holdLimit: 100_000 })));
  const got: ReceivedMessage[][] = receivers.map(() => []);
  receivers.forEach((r, k) => { t.teardown(() => r.close()); r.on('message', (m) => got[k]!.push(m)); });
  const sender = await connectClient(relay, { raw: true, sendBufferBytes: 8 * 1024 * 1024 });
  t.teardown(() => sender.close());
  const sizes = [700, 1024, 1500, 3000];
  const total = 2000;
  for (let i = 0; i < total; i++) {
    // Alternate the two receivers and vary sizes, in bursts of 500 sends within one turn.
    await sender.send([receivers[i % 2]!.identity.publicKey], body(i, sizes[i % sizes.length]!), { receipt: false });
    if (i % 500 === 499) await sender.flush();
  }
  await sender.flush();
  await waitForCount(got[0]!, total / 2, 20_000);
  await waitForCount(got[1]!, total / 2, 20_000);
  let wrong = 0;
  for (const [k, list] of got.entries()) {
    list.forEach((m, n) => {
      const i = 2 * n + k;
      if (!Buffer.from(m.body).equals(body(i, sizes[i % sizes.length]!))) wrong++;
    });
  }
  t.equal(wrong, 0, `all ${total} bodies arrived intact and in order`);
});
