// npm run soak -- --seconds N [--identities 50] [--late 10] [--pause-ms 30]
// Starts the relay as a child process and runs a population of clients that come and go,
// sending live and storable messages; exits 1 if the relay crashed, an acknowledged storable
// message is unaccounted for, or a message came twice on one connection or again after an ACK
// the relay had time to read.
import { numberOptions } from './lib/args.js';
import { formatSoakReport, runSoak, soakPassed } from './lib/soak.js';

const opts = numberOptions('npm run soak -- [--seconds 120] [--identities 50] [--late 10] [--pause-ms 30] [--workers 1]', { seconds: 120, identities: 50, late: 10, 'pause-ms': 30, workers: 1 });
// Ctrl-C or a kill: exit through 'exit', which takes the relay child down too.
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));
try {
  const report = await runSoak({
    seconds: opts.seconds, identities: Math.round(opts.identities), late: Math.round(opts.late), pauseMs: opts['pause-ms'], workers: Math.round(opts.workers),
    log: (l) => process.stderr.write(`${l}\n`),
  });
  process.stdout.write(`${formatSoakReport(report)}\n`);
  process.exitCode = soakPassed(report) ? 0 : 1;
} catch (err) {
  process.stderr.write(`soak: ${(err as Error).message}\n`);
  process.exitCode = 2;
}
