// test/relay.test.ts's cases, unchanged, against a cluster of 2 instances over a real nats-server
// and PostgreSQL (./relay-under-test.ts, ./cluster-instances.ts): consecutive clients land on
// alternate instances, so the two clients of each of the original relay's acceptance cases are on
// different instances (10 clients × 101 random messages, several recipients, relay restart).
import { clusterSkip } from './cluster-instances.js';

if (clusterSkip) {
  const { default: t } = await import('tap');
  t.test('the relay suite against a cluster', { skip: clusterSkip }, () => {});
} else {
  process.env.PULLTAB_TEST_CLUSTER = '2';
  await import('./relay.test.js');
}
