// The workers' full mesh: every worker listens on a Unix socket of its own in the relay's run
// directory (mode 0700, made by the primary), and dials every worker with a higher index, again
// and again while that link is down (a restarted worker is dialed afresh; one that restarts itself
// is dialed by the lower ones). One link per pair, carrying presence, forwards, their outcomes and
// mailbox notices (./mesh-frames.ts). Presence (./presence.ts) is the router's Peers.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Router } from '../server/router.js';
import type { RelayStats } from '../server/stats.js';
import { PeerLink, type LinkEvents, type LinkSettings } from './link.js';
import { Presence } from './presence.js';
import { routingEvents } from './routing-events.js';

const REDIAL_MS = 100;

export interface MeshOptions extends LinkSettings {
  /** How many workers the relay has (indices 1..count). */
  count: number;
  /** The run directory the sockets live in. */
  dir: string;
  log: Logger;
}

export function workerSocketPath(dir: string, index: number): string {
  return join(dir, `worker-${index}.sock`);
}

export class Mesh {
  readonly presence: Presence;
  readonly #options: MeshOptions;
  readonly #server: Server;
  /** The link to each worker by index, once up. */
  readonly #links = new Map<number, PeerLink>();
  readonly #all = new Set<PeerLink>();
  #router: Router | null = null;
  #closed = false;
  readonly #timer: NodeJS.Timeout;
  readonly #redials = new Set<NodeJS.Timeout>();

  constructor(options: MeshOptions) {
    this.#options = options;
    this.presence = new Presence(options.index, options.forwardDeadlineMs);
    this.#events = this.#linkEvents();
    this.#server = createServer((socket) => this.#link(socket));
    this.#timer = setInterval(() => {
      const now = Date.now();
      for (const link of this.#all) link.expire(now);
    }, Math.max(25, Math.floor(options.forwardDeadlineMs / 8)));
    this.#timer.unref();
  }

  /** The router that takes forwarded envelopes (the relay's, once it exists). */
  attach(router: Router, stats: RelayStats): void {
    this.#router = router;
    this.presence.stats = stats;
  }

  /** Listens, then dials the workers above this one (resolves once listening). */
  async start(): Promise<void> {
    const path = workerSocketPath(this.#options.dir, this.#options.index);
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(path, () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
    for (let i = this.#options.index + 1; i <= this.#options.count; i++) this.#dial(i);
  }

  /**
   * Resolves once a link to each of these workers is up and has brought its snapshot, or at the
   * deadline with the ones still missing.
   */
  async linkedTo(indices: number[], timeoutMs: number): Promise<number[]> {
    const deadline = Date.now() + timeoutMs;
    const missing = () => indices.filter((i) => this.#links.get(i)?.synced !== true);
    while (missing().length > 0 && Date.now() < deadline && !this.#closed) await new Promise((resolve) => setTimeout(resolve, 5));
    return missing();
  }

  /** The links up now, by the peer's index. */
  get links(): ReadonlyMap<number, PeerLink> {
    return this.#links;
  }

  close(): void {
    this.#closed = true;
    clearInterval(this.#timer);
    for (const t of this.#redials) clearTimeout(t);
    this.#server.close();
    for (const link of [...this.#all]) link.close();
  }

  #dial(index: number): void {
    if (this.#closed) return;
    const socket = connect(workerSocketPath(this.#options.dir, index));
    let connected = false;
    socket.once('connect', () => {
      connected = true;
      const link = this.#link(socket);
      if (link !== null) link.dialedIndex = index;
    });
    socket.once('error', () => {
      // Not listening yet (starting, or restarting): try again shortly.
      if (!connected) this.#redialLater(index);
    });
  }

  #redialLater(index: number): void {
    if (this.#closed) return;
    const t = setTimeout(() => {
      this.#redials.delete(t);
      if (!this.#links.has(index)) this.#dial(index);
    }, REDIAL_MS);
    this.#redials.add(t);
  }

  #link(socket: Socket): PeerLink | null {
    if (this.#closed) {
      socket.destroy();
      return null;
    }
    const link = new PeerLink(socket, this.#options, this.#events);
    this.#all.add(link);
    return link;
  }

  readonly #events: LinkEvents;

  #linkEvents(): LinkEvents {
    return {
      ...routingEvents(this.presence, () => this.#router),
      up: (link) => {
        const previous = this.#links.get(link.index);
        // The worker restarted and came back before its old link closed: the new one counts.
        if (previous !== undefined && previous !== link) previous.close();
        this.#links.set(link.index, link);
        this.presence.linkUp(link);
        this.#options.log.info({ event: 'worker_link_up', peer: link.index }, 'link to worker up');
      },
      down: (link) => {
        this.#all.delete(link);
        if (link.index < 0) {
          // Closed before its HELLO: dial that worker again.
          if (link.dialedIndex > 0) this.#redialLater(link.dialedIndex);
          return;
        }
        if (this.#links.get(link.index) === link) {
          this.#links.delete(link.index);
          this.presence.linkDown(link);
          this.#options.log.warn({ event: 'worker_link_down', peer: link.index }, 'link to worker down');
          if (link.index > this.#options.index) this.#redialLater(link.index);
        }
      },
    };
  }
}
