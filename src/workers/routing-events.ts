// What a link to another instance of the relay does with what it reads, the same whether the
// link is a Unix socket between workers (./mesh.ts) or NATS between hosts (src/cluster/): its
// presence deltas go to the presence table, forwarded envelopes and mailbox notices to the
// router (once the relay exists), and a pause of a sender is counted.
import { ForwardMiss } from '../server/destinations.js';
import type { Router } from '../server/router.js';
import type { LinkEvents } from './link.js';
import type { Presence } from './presence.js';

export type RoutingEvents = Omit<LinkEvents, 'up' | 'down'>;

export function routingEvents(presence: Presence, router: () => Router | null): RoutingEvents {
  return {
    presence: (link, add, key, epoch) => {
      if (!add) return presence.peerRemoved(link, key, epoch);
      presence.peerAdded(link, key, epoch);
      // The key connected there: it reads its mailbox once this instance's ACKs for it are committed.
      return router()?.acksCommitted(key) ?? undefined;
    },
    forwarded: (_link, origin, envelope, flags, ttlSeconds, id) => {
      const r = router();
      return r === null ? ForwardMiss.GONE : r.routeForwarded(origin, envelope, flags, ttlSeconds, id);
    },
    mailboxChanged: (_link, keyId) => router()?.mailboxChanged(keyId),
    senderPaused: () => {
      if (presence.stats !== null) presence.stats.peerPauses++;
    },
  };
}
