// npm run soak -- --seconds N [--identities 50] [--late 10] [--pause-ms 30] [--workers 1] [--instances N]
// Starts the relay as a child process (with --instances N ≥ 2: a cluster of N instances over a
// private nats-server and PostgreSQL, each connection to one of them at random) and runs a
// population of clients that come and go,
// sending live and storable messages; exits 1 if the relay crashed, an acknowledged storable
// message is unaccounted for, or a message came twice on one connection or again after an ACK
// the relay had time to read. PULLTAB_SOAK_EVIDENCE=DIR keeps evidence there: every instance's
// log at info with logDeliveries on (instance-<i>.log) and identities.txt (index → key).
import { numberOptions } from './lib/args.js';
import { formatSoakReport, runSoak, soakPassed } from './lib/soak.js';

const opts = numberOptions('npm run soak -- [--seconds 120] [--identities 50] [--late 10] [--pause-ms 30] [--workers 1] [--instances N (2 or more: a cluster over a private nats-server and PostgreSQL; default 1)]', { seconds: 120, identities: 50, late: 10, 'pause-ms': 30, workers: 1, instances: 1 });
// Ctrl-C or a kill: exit through 'exit', which takes the relay child down too.
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));
try {
  const report = await runSoak({
    seconds: opts.seconds, identities: Math.round(opts.identities), late: Math.round(opts.late), pauseMs: opts['pause-ms'], workers: Math.round(opts.workers), instances: Math.round(opts.instances),
    evidenceDir: process.env.PULLTAB_SOAK_EVIDENCE || undefined,
    log: (l) => process.stderr.write(`${l}\n`),
  });
  process.stdout.write(`${formatSoakReport(report)}\n`);
  process.exitCode = soakPassed(report) ? 0 : 1;
} catch (err) {
  process.stderr.write(`soak: ${(err as Error).message}\n`);
  process.exitCode = 2;
}
