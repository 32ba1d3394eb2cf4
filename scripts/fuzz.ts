// npm run fuzz -- --seconds N [--connections C]
// Starts the relay as a child process and throws fuzzed frames at it from many connections
// while a well-behaved pair exchanges messages; exits 1 if the relay crashed or lost any.
import { numberOptions } from './lib/args.js';
import { formatFuzzReport, fuzzPassed, runFuzz } from './lib/fuzz.js';

const opts = numberOptions('npm run fuzz -- [--seconds 60] [--connections 100] [--workers 1]', { seconds: 60, connections: 100, workers: 1 });
// Ctrl-C or a kill: exit through 'exit', which takes the relay child down too.
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));
try {
  const report = await runFuzz({ seconds: opts.seconds, connections: Math.round(opts.connections), workers: Math.round(opts.workers), log: (l) => process.stderr.write(`${l}\n`) });
  process.stdout.write(`${formatFuzzReport(report)}\n`);
  process.exitCode = fuzzPassed(report) ? 0 : 1;
} catch (err) {
  process.stderr.write(`fuzz: ${(err as Error).message}\n`);
  process.exitCode = 2;
}
