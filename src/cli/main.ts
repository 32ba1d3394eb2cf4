#!/usr/bin/env node
// The `pulltab` command. Each subcommand prints its own --help; errors end in one line on
// stderr and a non-zero exit status, never a stack trace.
import { admin } from './admin.js';
import { CliError } from './args.js';
import { events } from './events.js';
import { id, keygen } from './keys.js';
import { listen } from './listen.js';
import { send } from './send.js';
import { serve } from './serve.js';
import { packageVersion } from './version.js';

const COMMANDS: Record<string, (argv: string[]) => number | Promise<number>> = { serve, keygen, id, send, listen, admin, events };

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
  const command = COMMANDS[name];
  if (!command) throw new CliError(`unknown command ${JSON.stringify(name)}; run pulltab --help`, 2);
  return command(rest);
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
