// The fuzz and soak tools, run briefly against a relay process, so `npm test` keeps them (and
// what they check) working. The real runs are `npm run fuzz` and `npm run soak`.
import t, { type Test } from 'tap';
import { formatFuzzReport, runFuzz } from '../scripts/lib/fuzz.js';
import { formatSoakReport, runSoak, type SoakReport } from '../scripts/lib/soak.js';
import { ABUSE_BOUNDS } from '../scripts/lib/abusers.js';
import { natsSkipReason } from './nats-server.js';
import { postgresSkipReason } from './postgres-cluster.js';

t.test('fuzz for 3 s: the relay stays up, answers as documented, and the good pair loses nothing', async (t) => {
  const r = await runFuzz({ seconds: 3, connections: 50 });
  t.comment(formatFuzzReport(r));
  t.equal(r.crashes, 0, 'no relay crash');
  t.equal(r.pair.lost, 0, 'no accepted message lost');
  t.ok(r.pair.accepted > 0, 'the good pair exchanged messages');
  // A sanity check that the fuzzers ran (tens of thousands a second on a quiet machine; the abusers share it).
  t.ok(r.frames > 500, `${r.frames} frames tried`);
  t.equal(r.mismatches, 0, 'every connection ended as docs/PROTOCOL.md says');
  t.same(r.relayErrors, [], 'no error in the relay log');
  t.ok(r.anonPeak - r.anonBaseline <= ABUSE_BOUNDS.anonGrowthBytes, 'relay memory bounded beside clients that flood and do not read');
  t.ok(r.pairRateUnderAttack >= r.pairRateCalm * ABUSE_BOUNDS.pairRateShare, 'the good pair kept its share beside a flooder');
});

/** The soak's ledger rules, the same for one process, workers and a cluster. */
function accountedFor(t: Test, r: SoakReport): void {
  t.equal(r.crashes, 0, 'no relay process crashed');
  t.ok(r.storableAcknowledged > 0, 'storable messages were acknowledged');
  t.equal(r.storableMissing - r.storableMissingStale, 0, 'every acknowledged storable message delivered or still stored');
  // Messages put back after a lost connection never replace a newer one with the same storage key.
  t.equal(r.storableMissingStale, 0, 'no stored message replaced by an older one with the same storage key');
  t.equal(r.duplicatesUnexplained, 0, 'duplicates only after a disconnect before ack');
  t.equal(r.receivedUnknown, 0, 'no message received that was never sent');
}

t.test('soak for 3 s: every acknowledged storable message is accounted for', async (t) => {
  const r = await runSoak({ seconds: 3, identities: 20, late: 4 });
  t.comment(formatSoakReport(r));
  accountedFor(t, r);
  t.ok(r.end.fds <= r.start.fds, `the relay holds no more files at the end (${r.end.fds}) than after warm-up (${r.start.fds})`);
  t.same(r.relayErrors, [], 'no error in the relay log');
  t.ok(r.anonPeak - r.start.anonBytes <= ABUSE_BOUNDS.anonGrowthBytes, 'relay memory bounded beside the abusers');
});

// The same tools against a relay of 2 workers (`serve --workers 2`): what crosses between workers
// is accounted for as strictly. Memory, file and rate bounds are read from the relay's pid, here
// the primary's, so they are left to the single-process runs above.
t.test('fuzz for 3 s against 2 workers: up, as documented, nothing lost', async (t) => {
  const r = await runFuzz({ seconds: 3, connections: 50, workers: 2 });
  t.comment(formatFuzzReport(r));
  t.equal(r.crashes, 0, 'no relay crash');
  t.equal(r.pair.lost, 0, 'no accepted message lost');
  t.ok(r.pair.accepted > 0, 'the good pair exchanged messages');
  t.equal(r.mismatches, 0, 'every connection ended as docs/PROTOCOL.md says');
  t.same(r.relayErrors, [], 'no error in the relay log');
});

t.test('soak for 3 s against 2 workers: every acknowledged storable message is accounted for', async (t) => {
  const r = await runSoak({ seconds: 3, identities: 20, late: 4, workers: 2 });
  t.comment(formatSoakReport(r));
  accountedFor(t, r);
  t.same(r.relayErrors, [], 'no error in the relay log');
});

// Against a cluster of 3 instances over a private nats-server and PostgreSQL (`--instances 3`):
// each connection goes to an instance at random, so clients move between instances as they come
// and go, and the final drain reads every mailbox through one of them. The ledger's rules are the
// single relay's. Memory is bounded per instance (the abusers are on instance 1). Open files are
// reported, not bounded: each instance's PostgreSQL pool opens connections as the load asks.
const clusterSkip = postgresSkipReason() ?? natsSkipReason() ?? false;
t.test('soak for 3 s against 3 instances over NATS: every acknowledged storable message is accounted for', { skip: clusterSkip }, async (t) => {
  const r = await runSoak({ seconds: 3, identities: 20, late: 4, instances: 3 });
  t.comment(formatSoakReport(r));
  t.equal(r.instances, 3, 'three instances');
  accountedFor(t, r);
  t.equal(r.drainTimedOut, 0, 'the final drain emptied every mailbox');
  t.ok(r.perInstance.every((p) => (p.counters?.forwards ?? 0) > 0), 'messages crossed from every instance to another');
  t.same(r.relayErrors, [], 'no error in any instance\'s log');
  for (const p of r.perInstance) {
    t.ok(p.anonPeak - p.start.anonBytes <= ABUSE_BOUNDS.anonGrowthBytes, `instance ${p.instance}: memory bounded beside the abusers`);
  }
});
