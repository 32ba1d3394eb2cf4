// NatsMesh (src/cluster/nats-mesh.ts) against a real nats-server and a fake instance played by
// this test on a NATS connection of its own, which loses the messages core NATS may lose: each
// loss must start the link afresh rather than leave it broken for good while heartbeats go on.
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { NatsMesh } from '../src/cluster/nats-mesh.js';
import { INSTANCE_ID_LENGTH, LINK_HEADER, LinkMessage, readLinkHeader, type LinkMessageHeader } from '../src/cluster/nats-stream.js';
import { helloFrame, MeshFrame } from '../src/workers/mesh-frames.js';
import { Presence } from '../src/workers/presence.js';
import { silentLogger, sleep, until } from './helpers.js';
import { natsSkipReason, startNatsServer, type NatsServer } from './nats-server.js';

const skip = natsSkipReason() ?? false;
const HEARTBEAT_MS = 100;
const EMPTY_SNAPSHOT = Buffer.from([MeshFrame.PRESENCE, 0, 0, 0, 0]);

let nats: NatsServer;
t.before(async () => {
  if (!skip) nats = await startNatsServer();
});
t.teardown(async () => {
  await nats?.stop();
});

/** The mesh under test, on its own cluster name. */
async function meshUnderTest(t: Test, name: string): Promise<NatsMesh> {
  const mesh = new NatsMesh({
    servers: [nats.url], name, heartbeatMs: HEARTBEAT_MS, group: randomBytes(INSTANCE_ID_LENGTH),
    presence: new Presence(1, 1000), log: silentLogger,
    index: 1, forwardDeadlineMs: 1000, forwardBudgetBytes: 1024 * 1024, maxBodyBytes: () => 64 * 1024,
  });
  t.teardown(() => mesh.close());
  await mesh.start(0);
  await until('the mesh connected to NATS', () => mesh.connected);
  return mesh;
}

interface Received extends LinkMessageHeader {
  data: Buffer;
}

/** Another instance as the test plays it: it heartbeats, and sends link messages only when told. */
class FakeInstance {
  readonly id = randomBytes(INSTANCE_ID_LENGTH);
  readonly group = randomBytes(INSTANCE_ID_LENGTH);
  /** What the mesh sent this instance, in order. */
  readonly received: Received[] = [];
  readonly #nc: NatsConnection;
  readonly #name: string;
  readonly #timer: NodeJS.Timeout;

  private constructor(nc: NatsConnection, name: string) {
    this.#nc = nc;
    this.#name = name;
    nc.subscribe(`pulltab.${name}.in.${this.id.toString('hex')}`, {
      callback: (err, msg) => {
        if (err) return;
        const b = Buffer.from(msg.data);
        this.received.push({ ...readLinkHeader(b)!, data: b.subarray(LINK_HEADER) });
      },
    });
    this.#timer = setInterval(() => this.heartbeat(), HEARTBEAT_MS);
  }

  static async start(t: Test, name: string): Promise<FakeInstance> {
    const fake = new FakeInstance(await connect({ servers: nats.url }), name);
    t.teardown(() => fake.close());
    fake.heartbeat();
    return fake;
  }

  heartbeat(): void {
    const b = Buffer.alloc(1 + 2 * INSTANCE_ID_LENGTH + 1);
    b[0] = 3;
    this.id.copy(b, 1);
    this.group.copy(b, 1 + INSTANCE_ID_LENGTH);
    this.#nc.publish(`pulltab.${this.#name}.hb`, b);
  }

  /** Publishes one link message to the mesh. */
  send(mesh: NatsMesh, kind: number, gen: number, seq: number, ackGen: number, ack: number, data = Buffer.alloc(0)): void {
    const m = Buffer.alloc(LINK_HEADER + data.length);
    m[0] = kind;
    this.id.copy(m, 1);
    const o = 1 + INSTANCE_ID_LENGTH;
    m.writeUInt32BE(gen, o);
    m.writeUInt32BE(seq, o + 4);
    m.writeUInt32BE(ackGen, o + 8);
    m.writeUInt32BE(ack, o + 12);
    data.copy(m, LINK_HEADER);
    this.#nc.publish(`pulltab.${this.#name}.in.${mesh.idHex}`, m);
  }

  /** The mesh's first DATA messages (seq 0) of each generation it opened, in order. */
  get opened(): Received[] {
    return this.received.filter((m) => m.kind === LinkMessage.DATA && m.seq === 0);
  }

  /** Answers the mesh's latest generation as a link should: HELLO and an empty snapshot, gen `gen` from seq 0. */
  link(mesh: NatsMesh, gen: number): void {
    const theirs = this.opened.at(-1)!;
    this.send(mesh, LinkMessage.DATA, gen, 0, theirs.gen, 0, Buffer.concat([helloFrame(2, 4242), EMPTY_SNAPSHOT]));
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.#nc.close();
  }
}

function uniqueName(): string {
  return `loss${process.pid}x${Math.floor(Math.random() * 1e9)}`;
}

/** The mesh and a fake instance, linked (generation gen on the fake's side). */
async function linkedPair(t: Test, gen: number): Promise<{ mesh: NatsMesh; fake: FakeInstance }> {
  const name = uniqueName();
  const mesh = await meshUnderTest(t, name);
  const fake = await FakeInstance.start(t, name);
  await until('the mesh opened a link', () => fake.opened.length >= 1);
  fake.link(mesh, gen);
  await until('the link synchronised', () => mesh.instancesLinked === 1);
  return { mesh, fake };
}

t.test('a link whose first message was lost starts afresh, then synchronises', { skip }, async (t) => {
  const name = uniqueName();
  const mesh = await meshUnderTest(t, name);
  const fake = await FakeInstance.start(t, name);
  await until('the mesh opened a link to the fake instance', () => fake.opened.length >= 1);
  const first = fake.opened[0]!;
  // Its own first message "lost": what it sends next (seq 1) cannot be read without it.
  fake.send(mesh, LinkMessage.DATA, 0x1111, 1, first.gen, 0, Buffer.concat([helloFrame(2, 4242), EMPTY_SNAPSHOT]));
  await sleep(3 * HEARTBEAT_MS);
  t.equal(mesh.instancesLinked, 0, 'not synchronised: the snapshot came without its first message');
  await until('the mesh started the link afresh', () => fake.opened.length >= 2, 10 * 6 * HEARTBEAT_MS);
  t.not(fake.opened[1]!.gen, first.gen, 'a new generation');
  t.equal(mesh.gaps, 1, 'counted as a lost message');
  fake.link(mesh, 0x2222);
  await until('the link synchronised', () => mesh.instancesLinked === 1);
  t.pass('linked once nothing was lost');
});

t.test('DATA lost at the tail is seen at the next ACK and the link starts afresh', { skip }, async (t) => {
  const { mesh, fake } = await linkedPair(t, 0x3333);
  const opened = fake.opened.length;
  // DATA seq 1 (say, a presence change) was lost; nothing follows it but an ACK saying it was sent.
  fake.send(mesh, LinkMessage.ACK, 0x3333, 2, fake.opened.at(-1)!.gen, 0);
  await until('the mesh started the link afresh', () => fake.opened.length > opened);
  t.equal(mesh.gaps, 1, 'counted as a lost message');
  t.equal(mesh.instancesLinked, 0, 'not linked until the fake instance answers the new generation');
});

t.test('the mesh acknowledges on every heartbeat, saying how far it has sent', { skip }, async (t) => {
  const { mesh, fake } = await linkedPair(t, 0x4444);
  await sleep(2 * HEARTBEAT_MS);
  const before = fake.received.length;
  const sentData = fake.received.filter((m) => m.kind === LinkMessage.DATA).length;
  await sleep(10 * HEARTBEAT_MS);
  const acks = fake.received.slice(before).filter((m) => m.kind === LinkMessage.ACK);
  t.ok(acks.length >= 5, `${acks.length} ACKs in 10 heartbeats with nothing else sent`);
  t.ok(acks.every((a) => a.ackGen === 0x4444 && a.ack === 0), 'each acknowledges what the mesh read (seq 0)');
  t.ok(acks.every((a) => a.seq === sentData), `each says the mesh sent ${sentData} DATA messages`);
});

t.test('a message whose handling throws is counted and logged, and the mesh goes on reading NATS', { skip }, async (t) => {
  const name = uniqueName();
  const mesh = await meshUnderTest(t, name);
  mesh.answerWith(() => {
    throw new Error('a bug in an admin answer');
  });
  const asker = await connect({ servers: nats.url });
  t.teardown(() => asker.close());
  asker.publish(`pulltab.${name}.admin`, JSON.stringify({ what: 'observe' }), { reply: 'nobody' });
  await until('the failure counted', () => mesh.failures === 1);
  const fake = await FakeInstance.start(t, name);
  await until('a new instance\'s heartbeat still read: a link opened', () => fake.opened.length >= 1);
  t.pass('still reading');
});
