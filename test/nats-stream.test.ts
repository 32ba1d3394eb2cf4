// NatsStream (src/cluster/nats-stream.ts) without NATS: two streams whose published messages the
// test carries from one to the other by hand, dropping the ones a lossy NATS would lose.
import t from 'tap';
import { LINK_HEADER, LinkMessage, NatsStream, newLinkCounters, readLinkHeader } from '../src/cluster/nats-stream.js';
import { sleep } from './helpers.js';

interface End {
  stream: NatsStream;
  /** What it published, not yet carried to the other end. */
  sent: Buffer[];
  /** What it read. */
  read: Buffer[];
}

function end(id: number, windowBytes = 64 * 1024): End {
  const sent: Buffer[] = [];
  const stream = new NatsStream({
    publish: (m) => sent.push(m),
    self: Buffer.alloc(16, id),
    windowBytes,
    maxMessageBytes: () => 1024 * 1024,
    counters: newLinkCounters(),
  });
  const read: Buffer[] = [];
  stream.on('data', (d: Buffer) => read.push(d));
  return { stream, sent, read };
}

/**
 * Carries from's messages to to, as NatsMesh does (acknowledged, then DATA received, an ACK's
 * tail checked), but for the ones drop says are lost; returns false once to saw a loss.
 */
function carry(from: End, to: End, drop: (m: Buffer, i: number) => boolean = () => false): boolean {
  const messages = from.sent.splice(0);
  let intact = true;
  messages.forEach((m, i) => {
    if (drop(m, i)) return;
    const h = readLinkHeader(m)!;
    to.stream.acknowledged(h.ackGen, h.ack);
    if (h.kind === LinkMessage.DATA) intact = to.stream.received(h.gen, h.seq, m.subarray(LINK_HEADER)) && intact;
    else intact = to.stream.allReceived(h.gen, h.seq) && intact;
  });
  return intact;
}

const write = (e: End, text: string) => new Promise<void>((resolve) => e.stream.write(Buffer.from(text), () => resolve()));
const kindOf = (m: Buffer) => readLinkHeader(m)!.kind;

t.test('bytes cross in order, and the reader acknowledges what it read', async (t) => {
  const a = end(1);
  const b = end(2);
  await write(a, 'one');
  await write(a, 'two');
  t.ok(carry(a, b));
  t.equal(Buffer.concat(b.read).toString(), 'onetwo');
  await sleep(5);
  t.same(b.sent.map(kindOf), [LinkMessage.ACK], 'one ACK for the turn');
  t.ok(carry(b, a), 'the ACK says b sent no DATA: nothing lost');
});

t.test('a DATA message lost between two others breaks the link at the next one', async (t) => {
  const a = end(1);
  const b = end(2);
  for (const text of ['x', 'y', 'z']) await write(a, text);
  t.notOk(carry(a, b, (_m, i) => i === 1), 'the gap is seen');
});

t.test('a DATA message lost at the tail is seen in the next ACK (sent at each heartbeat)', async (t) => {
  const a = end(1);
  const b = end(2);
  await write(a, 'first');
  t.ok(carry(a, b));
  await write(a, 'last');
  t.ok(carry(a, b, () => true), 'lost: nothing after it to show a gap');
  a.stream.resendAck();
  t.notOk(carry(a, b), 'the heartbeat ACK says a sent one more than b read');
});

t.test('a lost ACK does not leave a full window waiting: the next heartbeat ACK releases it', async (t) => {
  const a = end(1, 1024);
  const b = end(2);
  let released = false;
  a.stream.write(Buffer.alloc(2000, 1), () => { released = true; });
  t.notOk(released, 'past the window: the write waits');
  t.ok(carry(a, b));
  await sleep(5);
  carry(b, a, () => true);
  await sleep(5);
  t.notOk(released, 'the ACK was lost: still waiting');
  b.stream.resendAck();
  carry(b, a);
  await sleep(5);
  t.ok(released, 'released by the heartbeat ACK');
});

t.test('a paused reader acknowledges nothing new, not even at a heartbeat', async (t) => {
  const a = end(1, 1024);
  const b = end(2);
  await write(a, 'seen');
  carry(a, b);
  await sleep(5);
  carry(b, a);
  b.stream.pause();
  let released = false;
  a.stream.write(Buffer.alloc(2000, 2), () => { released = true; });
  carry(a, b);
  await sleep(5);
  b.stream.resendAck();
  carry(b, a);
  await sleep(5);
  t.notOk(released, 'held back while b does not read');
  b.stream.resume();
  await sleep(5);
  carry(b, a);
  await sleep(5);
  t.ok(released, 'released once b reads again');
});
