// What the admin commands of an instance see in a cluster of hosts: every instance, not only this
// one. The instance asks the others over NATS (NatsMesh.askAll: one request on
// pulltab.<cluster>.admin, one answer per instance) and adds its own answer. Workers of one host
// are instances too, so the answers cover them; while NATS is down the instance answers for its
// host alone (hostWide) and `stats` says how many instances did not answer.
//
// `block` needs none of this: the policies are in the shared PostgreSQL store, and every instance
// applies a change to its own sessions within a poll (policyPollMs).
import { encodeKey } from '../crypto/keys.js';
import type { AdminConnections, AdminSession } from '../admin/host.js';
import type { ConnectedSessions } from '../server/connected-sessions.js';
import { mergeObservations, type Observation } from '../server/observation.js';
import type { Relay } from '../server/relay.js';
import type { AdminQuestion, NatsMesh } from './nats-mesh.js';

/** This instance's connections, as the others see them (tagged with its id and worker index). */
function instanceSessions(sessions: ConnectedSessions, mesh: NatsMesh, worker: number | undefined): AdminSession[] {
  return sessions.live().map((s) => ({
    keyText: s.keyText, connectedAt: s.connectedAt, messagesIn: s.messagesIn, messagesOut: s.messagesOut,
    instance: mesh.idHex, ...(worker !== undefined ? { worker } : {}),
  }));
}

/** An instance's own answer to an admin question (what the others ask it over NATS). */
export async function answerAsInstance(relay: Relay, mesh: NatsMesh, worker: number | undefined, question: AdminQuestion): Promise<unknown> {
  switch (question.what) {
    case 'observe': return relay.observe();
    case 'sessions': return instanceSessions(relay.connectedSessions, mesh, worker);
    case 'kick': return question.key === undefined ? 0 : relay.connectedSessions.kick(Buffer.from(question.key, 'hex'));
  }
}

/**
 * The admin commands' view of every instance's connections, given this instance's own sessions
 * (its worker index, in a relay of workers); `hostWide` is what it says while NATS is down (its
 * host's workers, or itself).
 */
export function clusterWideConnections(mesh: NatsMesh, localSessions: ConnectedSessions, worker: number | undefined, hostWide: AdminConnections): AdminConnections {
  const everyone = async (): Promise<AdminSession[] | null> => {
    if (!mesh.connected) return null;
    const { answers } = await mesh.askAll({ what: 'sessions' });
    return [...instanceSessions(localSessions, mesh, worker), ...answers.flatMap((a) => (Array.isArray(a) ? (a as AdminSession[]) : []))];
  };
  return {
    live: async () => (await everyone()) ?? hostWide.live(),
    isConnected: async (key) => {
      if (localSessions.isConnected(key)) return true;
      const all = await everyone();
      if (all === null) return hostWide.isConnected(key);
      const text = encodeKey(key);
      return all.some((s) => s.keyText === text);
    },
    kick: async (key) => {
      if (!mesh.connected) return hostWide.kick(key);
      const { answers } = await mesh.askAll({ what: 'kick', key: Buffer.from(key).toString('hex') });
      return localSessions.kick(key) + answers.reduce<number>((n, a) => n + (typeof a === 'number' ? a : 0), 0);
    },
    enforcePolicies: (only) => localSessions.enforcePolicies(only),
  };
}

/**
 * `stats` over the cluster: every instance's counters summed (the mailbox totals are the shared
 * store's, counted once), `instances` (how many answered, this one included) and `unanswered`.
 * While NATS is down: the host's (hostWide), and how many instances were heard from lately.
 */
export async function clusterStats(mesh: NatsMesh, local: () => Promise<Observation>, hostWide: () => Promise<object>): Promise<object> {
  if (!mesh.connected) return { ...(await hostWide()), instances: null, unanswered: mesh.membersKnown };
  const own = await local();
  const { answers, missing } = await mesh.askAll({ what: 'observe' });
  const parts = [own, ...answers.filter((a): a is Observation => a !== null && typeof a === 'object' && 'connections' in a)];
  const { workers: _perHost, ...merged } = mergeObservations(parts, [], own.uptimeSeconds);
  return { ...merged, cluster: own.cluster, instances: parts.length, unanswered: missing };
}
