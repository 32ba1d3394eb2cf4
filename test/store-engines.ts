// The `store` setting that opens each engine the factory knows, for the tests that run one list of
// cases against every engine: the engine's name for the embedded ones, and for PostgreSQL the URL
// of a new empty database on this test file's private cluster (test/postgres-cluster.ts), started
// on first use and removed when the file's tests end.
import t from 'tap';
import { ENGINE_NAMES } from '../src/store/open.js';
import { postgresSkipReason, startCluster, type Cluster } from './postgres-cluster.js';

export { ENGINE_NAMES };

let cluster: Promise<Cluster> | null = null;

function theCluster(): Promise<Cluster> {
  if (cluster === null) {
    cluster = startCluster();
    const started = cluster;
    t.teardown(async () => (await started).destroy());
  }
  return cluster;
}

/** The setting that opens a fresh, empty store of this engine. */
export async function freshStoreSetting(engine: string): Promise<string> {
  if (engine !== 'postgres') return engine;
  return (await theCluster()).createDatabase();
}

/** Why this engine's cases skip here (PostgreSQL not installed), or false; throws when CI requires it. */
export function engineSkip(engine: string): string | false {
  return engine === 'postgres' ? postgresSkipReason() ?? false : false;
}
