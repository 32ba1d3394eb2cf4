// The relay's instances on other hosts, reached through NATS (core NATS: no JetStream). Each
// instance (a single-process relay, or each worker of one) has an id of its own and two subjects:
//
//   pulltab.<cluster>.hb        every instance's heartbeat (HEARTBEAT below), to all
//   pulltab.<cluster>.in.<id>   the link messages for instance <id> (./nats-stream.ts), from all
//   pulltab.<cluster>.admin     admin questions (JSON, with a reply subject), to all (./cluster-admin.ts)
//
// One subject per instance, not per client key (../shared/reference/scale-out.md §2): presence and
// forwarding are the workers' protocol (src/workers/link.ts, src/workers/presence.ts) on a link per
// pair of instances, and every frame of one turn to one instance leaves as one NATS message.
// A heartbeat from an instance this one has no link to opens one; a link message with seq 0 from
// one opens one too (or replaces the old one: the peer started afresh). A link that a lost message
// broke starts afresh: a gap in its DATA, DATA lost at the tail (seen in the next ACK, one of which
// goes on every link at every heartbeat), or a first message lost (the link has not synchronised
// within STALLED_HEARTBEATS heartbeats). An instance not heard
// from for three heartbeats is dropped with its keys, and so is every instance while this one is
// disconnected from NATS (it serves its own clients; messages for keys elsewhere are stored if
// storable, else refused RECIPIENT_OFFLINE). Workers of one host (one `group`) reach each other
// over their Unix-socket mesh and ignore each other here. HEARTBEAT: kind 3 | from 16 | group 16 |
// flags u8 (1: just joined, answer at once; 2: leaving, drop me now).
import { randomBytes } from 'node:crypto';
import { connect, createInbox, credsAuthenticator, type NatsConnection } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import type { ClusterObservation } from '../server/observation.js';
import type { Router } from '../server/router.js';
import type { RelayStats } from '../server/stats.js';
import { PeerLink, type LinkEvents, type LinkSettings } from '../workers/link.js';
import type { Presence } from '../workers/presence.js';
import { routingEvents } from '../workers/routing-events.js';
import { INSTANCE_ID_LENGTH, LINK_HEADER, LinkMessage, NatsStream, newLinkCounters, readLinkHeader } from './nats-stream.js';

const HEARTBEAT = 3;
const HEARTBEAT_LENGTH = 1 + 2 * INSTANCE_ID_LENGTH + 1;
const JOINING = 1;
const LEAVING = 2;
/** Heartbeats missed before an instance is dropped. */
const MISSED_HEARTBEATS = 3;
/**
 * Heartbeats after which a link that has not synchronised (its peer's HELLO and snapshot not read)
 * starts afresh, its peer still heard: a first message of one side or the other was lost.
 */
const STALLED_HEARTBEATS = 2 * MISSED_HEARTBEATS;
/** How long an admin question waits for the instances' answers. */
const ASK_TIMEOUT_MS = 2_000;

/** An admin question to every instance: each answers from its own sessions (./cluster-admin.ts). */
export interface AdminQuestion {
  what: 'observe' | 'sessions' | 'kick';
  /** kick: the key, hex. */
  key?: string;
}

export interface NatsMeshOptions extends LinkSettings {
  /** nats://host:port URLs of the NATS servers (any of them; the client finds the rest). */
  servers: string[];
  /** The cluster's name: the instances of one relay share it (a subject token). */
  name: string;
  /** The workers of one host share a group (16 bytes); a single process is a group of its own. */
  group: Buffer;
  heartbeatMs: number;
  /** NATS authentication: a token, or a user's credentials file's text (JWT and seed). */
  token?: string;
  credentials?: string;
  presence: Presence;
  log: Logger;
}

interface Instance {
  link: PeerLink | null;
  stream: NatsStream | null;
  lastHeard: number;
  /** When its link was opened. */
  openedAt: number;
}

export class NatsMesh {
  readonly id = randomBytes(INSTANCE_ID_LENGTH);
  readonly idHex = this.id.toString('hex');
  readonly #options: NatsMeshOptions;
  readonly #subjects: { heartbeat: string; prefix: string; admin: string };
  #nc: NatsConnection | null = null;
  #connected = false;
  readonly #instances = new Map<string, Instance>();
  /** Every instance heard from lately, this host's other workers included: when each was last heard. */
  readonly #members = new Map<string, number>();
  #answer: ((question: AdminQuestion) => Promise<unknown>) | null = null;
  #router: Router | null = null;
  #closed = false;
  #timer: NodeJS.Timeout | null = null;
  #expiry: NodeJS.Timeout | null = null;
  /** Link messages that could not be read (too short, unknown kind), and links broken by a lost message. */
  malformed = 0;
  gaps = 0;
  /** Messages whose handling threw (a bug): logged, and the link they came on starts afresh. */
  failures = 0;
  /** What every link of this instance has carried (its streams count into it). */
  readonly counters = newLinkCounters();

  constructor(options: NatsMeshOptions) {
    this.#options = options;
    this.#events = this.#linkEvents();
    this.#subjects = { heartbeat: `pulltab.${options.name}.hb`, prefix: `pulltab.${options.name}.in.`, admin: `pulltab.${options.name}.admin` };
  }

  /** Connected to NATS now. */
  get connected(): boolean {
    return this.#connected;
  }

  /** Instances linked now (their snapshot read). */
  get instancesLinked(): number {
    let n = 0;
    for (const i of this.#instances.values()) if (i.link?.synced === true) n++;
    return n;
  }

  /** Connected, and every instance heard from has a link whose snapshot has arrived (/readyz). */
  get synchronized(): boolean {
    if (!this.#connected) return false;
    for (const i of this.#instances.values()) if (i.link === null || !i.link.synced) return false;
    return true;
  }

  observe(): ClusterObservation {
    return {
      connected: this.#connected ? 1 : 0, instances: this.instancesLinked, remoteKeys: this.#options.presence.remoteCount, linkGaps: this.gaps, malformed: this.malformed, failures: this.failures,
      link: { ...this.counters },
    };
  }

  /** Instances heard from in the last three heartbeats (other workers of this host included). */
  get membersKnown(): number {
    return this.#members.size;
  }

  /** How this instance answers the others' admin questions. */
  answerWith(answer: (question: AdminQuestion) => Promise<unknown>): void {
    this.#answer = answer;
  }

  /**
   * Asks every other instance (this host's workers included) and resolves with their answers once
   * each instance heard from lately has answered, or after ASK_TIMEOUT_MS with what came and how
   * many did not answer.
   */
  askAll(question: AdminQuestion): Promise<{ answers: unknown[]; missing: number }> {
    const nc = this.#nc;
    const expected = this.#members.size;
    if (nc === null || !this.#connected || expected === 0) return Promise.resolve({ answers: [], missing: expected });
    const inbox = createInbox();
    const answers: unknown[] = [];
    return new Promise((resolve) => {
      const finish = () => {
        clearTimeout(timer);
        sub.unsubscribe();
        resolve({ answers, missing: Math.max(0, expected - answers.length) });
      };
      const timer = setTimeout(finish, ASK_TIMEOUT_MS);
      const sub = nc.subscribe(inbox, {
        callback: (err, msg) => {
          if (err) return;
          try {
            answers.push((JSON.parse(msg.string()) as { value: unknown }).value);
          } catch {
            this.malformed++;
          }
          if (answers.length >= expected) finish();
        },
      });
      nc.publish(this.#subjects.admin, JSON.stringify(question), { reply: inbox });
    });
  }

  attach(router: Router, stats: RelayStats): void {
    this.#router = router;
    this.#options.presence.stats ??= stats;
  }

  /**
   * Connects (retrying without end in the background if NATS is not there) and waits up to
   * waitMs for the other instances' snapshots. Resolves whether or not that happened: false if not.
   */
  async start(waitMs: number): Promise<boolean> {
    const o = this.#options;
    const deadline = Date.now() + waitMs;
    this.#timer = setInterval(() => this.#beat(), o.heartbeatMs);
    this.#timer.unref();
    this.#expiry = setInterval(() => {
      const now = Date.now();
      for (const i of this.#instances.values()) i.link?.expire(now);
    }, Math.max(25, Math.floor(o.forwardDeadlineMs / 8)));
    this.#expiry.unref();
    const connecting = connect({
      servers: o.servers, name: `pulltab-${o.name}-${this.idHex.slice(0, 8)}`,
      maxReconnectAttempts: -1, reconnectTimeWait: 250, waitOnFirstConnect: true,
      pingInterval: 10_000, noEcho: true,
      ...(o.token !== undefined ? { token: o.token } : {}),
      ...(o.credentials !== undefined ? { authenticator: credsAuthenticator(new TextEncoder().encode(o.credentials)) } : {}),
    }).then((nc) => this.#up(nc), (err: Error) => {
      o.log.error({ event: 'cluster_connect_failed', err: err.message }, 'cannot connect to NATS');
    });
    await Promise.race([connecting, sleep(Math.max(0, deadline - Date.now()))]);
    if (!this.#connected) return false;
    // Instances heard at once answer our joining heartbeat with one of theirs and a link.
    await sleep(Math.min(250, Math.max(0, deadline - Date.now())));
    while (!this.synchronized && Date.now() < deadline && !this.#closed) await sleep(5);
    return this.synchronized;
  }

  /** Tells the others this instance leaves, and disconnects. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    if (this.#expiry) clearInterval(this.#expiry);
    for (const i of this.#instances.values()) i.link?.close();
    this.#instances.clear();
    const nc = this.#nc;
    if (nc === null) return;
    if (this.#connected) nc.publish(this.#subjects.heartbeat, this.#heartbeat(LEAVING));
    await nc.drain().catch(() => {});
  }

  #up(nc: NatsConnection): void {
    if (this.#closed) {
      void nc.close();
      return;
    }
    this.#nc = nc;
    this.#connected = true;
    const log = this.#options.log;
    log.info({ event: 'cluster_connected', server: nc.getServer(), instance: this.idHex }, 'connected to NATS');
    // drain() in close() ends these subscriptions. What a callback throws would stop the NATS
    // client reading at all (it ends its read loop), so each is caught here (#guarded).
    const heard = (b: Buffer) => this.#heard(b);
    const message = (b: Buffer) => this.#message(b);
    nc.subscribe(this.#subjects.heartbeat, { callback: (err, msg) => { if (!err) this.#guarded(msg.data, heard, true); } });
    nc.subscribe(this.#subjects.prefix + this.idHex, { callback: (err, msg) => { if (!err) this.#guarded(msg.data, message, true); } });
    nc.subscribe(this.#subjects.admin, { callback: (err, msg) => { if (!err && msg.reply) this.#guarded(msg.data, () => this.#asked(msg.string(), msg.reply!), false); } });
    nc.publish(this.#subjects.heartbeat, this.#heartbeat(JOINING));
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === 'disconnect') {
          this.#connected = false;
          log.warn({ event: 'cluster_disconnected' }, 'disconnected from NATS: the other instances are unreachable until it reconnects');
          this.#dropAll();
        } else if (s.type === 'reconnect') {
          this.#connected = true;
          log.info({ event: 'cluster_reconnected', server: nc.getServer() }, 'reconnected to NATS');
          nc.publish(this.#subjects.heartbeat, this.#heartbeat(JOINING));
        } else if (s.type === 'slowConsumer') {
          log.warn({ event: 'cluster_slow_consumer' }, 'NATS messages arrive faster than this instance reads them');
        }
      }
    })();
  }

  /**
   * Handles one NATS message; if that throws (a bug), logs it and starts the sender's link afresh
   * (its state may be half-updated), so that the NATS client goes on reading for everyone else.
   * fromInstance: the message starts with kind and the sender's id (heartbeats, link messages).
   */
  #guarded(data: Uint8Array, handle: (b: Buffer) => void, fromInstance: boolean): void {
    const b = toBuffer(data);
    try {
      handle(b);
    } catch (err) {
      this.failures++;
      const from = fromInstance && b.length >= 1 + INSTANCE_ID_LENGTH ? b.toString('hex', 1, 1 + INSTANCE_ID_LENGTH) : null;
      this.#options.log.error({ event: 'cluster_message_failed', instance: from, err }, 'handling a message from another instance failed: its link starts afresh');
      const instance = from === null ? undefined : this.#instances.get(from);
      if (from !== null && instance !== undefined) this.#open(from, instance);
    }
  }

  /** Another instance's admin question: answered on its reply subject (null when it cannot be). */
  #asked(text: string, reply: string): void {
    let question: AdminQuestion;
    try {
      question = JSON.parse(text) as AdminQuestion;
    } catch {
      this.malformed++;
      return;
    }
    const known = ['observe', 'sessions', 'kick'].includes(question?.what) && (question.key === undefined || /^[0-9a-f]{64}$/.test(question.key));
    const answering = this.#answer === null || !known ? Promise.resolve(null) : this.#answer(question).catch(() => null);
    void answering.then((value) => {
      if (!this.#connected || this.#closed) return;
      try {
        this.#nc!.publish(reply, JSON.stringify({ instance: this.idHex, value }));
      } catch {
        this.malformed++; // a reply subject NATS refuses (or the connection closing meanwhile)
      }
    });
  }

  #beat(): void {
    const now = Date.now();
    const deadAfter = this.#options.heartbeatMs * MISSED_HEARTBEATS;
    for (const [id, heard] of this.#members) if (now - heard > deadAfter) this.#members.delete(id);
    const stalledAfter = this.#options.heartbeatMs * STALLED_HEARTBEATS;
    for (const [id, i] of this.#instances) {
      if (now - i.lastHeard > deadAfter) {
        this.#options.log.warn({ event: 'cluster_instance_lost', instance: id }, 'no heartbeat from an instance: dropped with its keys');
        this.#drop(id);
      } else if (i.link !== null && !i.link.synced && now - i.openedAt > stalledAfter) {
        this.#broken(id, i, 'a link between instances did not synchronise (a first message was lost): it starts afresh');
      } else if (this.#connected) {
        i.stream?.resendAck();
      }
    }
    if (this.#connected) this.#nc!.publish(this.#subjects.heartbeat, this.#heartbeat(0));
  }

  /** A message on the link to instance id was lost: counted, logged, and the link starts afresh. */
  #broken(id: string, instance: Instance, why: string): void {
    this.gaps++;
    this.#options.log.warn({ event: 'cluster_link_gap', instance: id }, why);
    this.#open(id, instance);
  }

  #heartbeat(flags: number): Buffer {
    const b = Buffer.allocUnsafe(HEARTBEAT_LENGTH);
    b[0] = HEARTBEAT;
    this.id.copy(b, 1);
    this.#options.group.copy(b, 1 + INSTANCE_ID_LENGTH);
    b[HEARTBEAT_LENGTH - 1] = flags;
    return b;
  }

  #heard(b: Buffer): void {
    if (this.#closed || b.length !== HEARTBEAT_LENGTH || b[0] !== HEARTBEAT) return;
    const id = b.toString('hex', 1, 1 + INSTANCE_ID_LENGTH);
    if (id === this.idHex) return;
    const flags = b[HEARTBEAT_LENGTH - 1];
    if (flags & LEAVING) this.#members.delete(id);
    else this.#members.set(id, Date.now());
    // The workers of this host: the Unix-socket mesh links them.
    if (b.compare(this.#options.group, 0, INSTANCE_ID_LENGTH, 1 + INSTANCE_ID_LENGTH, 1 + 2 * INSTANCE_ID_LENGTH) === 0) return;
    if (flags & LEAVING) {
      this.#drop(id);
      return;
    }
    const instance = this.#instances.get(id);
    if (instance !== undefined) {
      instance.lastHeard = Date.now();
      if (instance.link === null) this.#open(id, instance);
    } else {
      this.#open(id, { link: null, stream: null, lastHeard: Date.now(), openedAt: 0 });
    }
    if (flags & JOINING) this.#nc?.publish(this.#subjects.heartbeat, this.#heartbeat(0));
  }

  #message(b: Buffer): void {
    if (this.#closed) return;
    const h = readLinkHeader(b);
    if (h === null || (h.kind !== LinkMessage.DATA && h.kind !== LinkMessage.ACK)) {
      this.malformed++;
      return;
    }
    let instance = this.#instances.get(h.from);
    if (instance === undefined) {
      // The first we hear of it is its link's first message: its heartbeat is on its way.
      if (h.kind !== LinkMessage.DATA || h.seq !== 0) return;
      instance = { link: null, stream: null, lastHeard: Date.now(), openedAt: 0 };
      this.#open(h.from, instance);
    }
    instance.lastHeard = Date.now();
    const stream = instance.stream;
    if (stream === null) return; // not opened: closing
    stream.acknowledged(h.ackGen, h.ack);
    if (h.kind !== LinkMessage.DATA) {
      if (!stream.allReceived(h.gen, h.seq)) this.#broken(h.from, instance, 'a message between instances was lost (seen in an ACK): the link starts afresh');
      return;
    }
    if (stream.inGen !== 0 && h.gen !== stream.inGen) {
      // A new generation from the peer: it broke its side (a gap, or it restarted the link).
      // The rest of one whose first message was lost is ignored: the peer's link does not
      // synchronise, and it starts afresh again (#beat).
      if (h.seq !== 0) return;
      this.#open(h.from, instance);
    } else if (stream.inGen === 0 && h.seq !== 0) {
      return; // the rest of a generation from before ours (or one whose first message was lost: #beat)
    }
    if (!instance.stream!.received(h.gen, h.seq, b.subarray(LINK_HEADER))) {
      this.#broken(h.from, instance, 'a message between instances was lost: the link starts afresh');
    }
  }

  /** Opens a link to instance id (closing the one it had): a new generation, HELLO and snapshot first. */
  #open(id: string, instance: Instance): void {
    const old = instance.link;
    instance.link = null;
    old?.close();
    // Messages can arrive just before the client's reconnect status does: #nc, not #connected.
    if (this.#nc === null || this.#closed) return;
    const subject = this.#subjects.prefix + id;
    const nc = this.#nc!;
    const o = this.#options;
    const stream = new NatsStream({
      publish: (message) => nc.publish(subject, message),
      self: this.id,
      windowBytes: Math.max(64 * 1024, Math.floor(o.forwardBudgetBytes / 2)),
      maxMessageBytes: () => nc.info?.max_payload ?? 1024 * 1024,
      counters: this.counters,
    });
    instance.stream = stream;
    instance.openedAt = Date.now();
    instance.link = new PeerLink(stream, o, this.#events);
    this.#instances.set(id, instance);
  }

  #drop(id: string): void {
    const instance = this.#instances.get(id);
    if (instance === undefined) return;
    this.#instances.delete(id);
    instance.link?.close();
  }

  #dropAll(): void {
    for (const id of [...this.#instances.keys()]) this.#drop(id);
  }

  readonly #events: LinkEvents;

  #linkEvents(): LinkEvents {
    return {
      ...routingEvents(this.#options.presence, () => this.#router),
      up: (link) => {
        this.#options.presence.linkUp(link);
        this.#options.log.info({ event: 'cluster_link_up', peer: link.index }, 'link to an instance up');
      },
      down: (link) => {
        // Only a link that was up was told to the presence table.
        if (link.index >= 0) this.#options.presence.linkDown(link);
      },
    };
  }
}

function toBuffer(data: Uint8Array): Buffer {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
