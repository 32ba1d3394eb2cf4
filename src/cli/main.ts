#!/usr/bin/env node
// The `pulltab` command. Each subcommand prints its own --help; errors end in one line on
// stderr and a non-zero exit status, never a stack trace.
import { CliError } from './args.js';
import { packageVersion } from './version.js';

type Command = (argv: string[]) => number | Promise<number>;
/**
 * Each command is loaded when run: `pulltab send` does not load the relay (LMDB, pino,
 * prom-client), which halves its start-up, and scripts run it once per message.
 */
const COMMANDS: Record<string, () => Promise<Command>> = {
  serve: async () => (await import('./serve.js')).serve,
  keygen: async () => (await import('./keys.js')).keygen,
  id: async () => (await import('./keys.js')).id,
  send: async () => (await import('./send.js')).send,
  listen: async () => (await import('./listen.js')).listen,
  admin: async () => (await import('./admin.js')).admin,
  events: async () => (await import('./events.js')).events,
};

const USAGE = `Usage: pulltab COMMAND [options]

Commands:
  serve     start a relay
  keygen    create an identity (Ed25519 key pair)
  id        print the public key of an identity
  send      send a sealed message through a relay
  listen    print messages received through a relay
  admin     administer a relay: policies, users, connections, usage, stats
  events    summarise a relay's event log by event name

Run pulltab COMMAND --help for a command's options; pulltab --version prints the version.
`;

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(USAGE);
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-v') {
    process.stdout.write(packageVersion() + '\n');
    return 0;
  }
  const load = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!load) throw new CliError(`unknown command ${JSON.stringify(name)}; run pulltab --help`, 2);
  return (await load())(rest);
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    if (err instanceof CliError) {
      process.stderr.write(`pulltab: ${err.message}\n`);
      process.exitCode = err.exitCode;
    } else {
      process.stderr.write(`pulltab: unexpected error: ${(err as Error)?.stack ?? String(err)}\n`);
      process.exitCode = 1;
    }
  },
);
