// Shared pieces of the `pulltab` command: argument parsing with --help, and errors that end
// the command with one clear line instead of a stack trace.
import { parseArgs, type ParseArgsConfig } from 'node:util';

/** An error the user can act on: printed as one line, exit status 2 for usage, 1 otherwise. */
export class CliError extends Error {
  override name = 'CliError';
  constructor(message: string, readonly exitCode = 1) {
    super(message);
  }
}

export interface CommandSpec<O extends ParseArgsConfig['options']> {
  name: string;
  usage: string;
  description: string;
  options: O;
  /** Help text for each option, in order. */
  help: Record<string, string>;
  allowPositionals?: boolean;
}

export function helpText(spec: CommandSpec<ParseArgsConfig['options']>): string {
  const lines = [`Usage: pulltab ${spec.usage}`, '', spec.description, '', 'Options:'];
  for (const [flag, text] of Object.entries(spec.help)) lines.push(`  ${flag.padEnd(28)} ${text}`);
  lines.push(`  ${'-h, --help'.padEnd(28)} show this help`);
  return lines.join('\n') + '\n';
}

export interface ParsedCommand {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

/** Parses argv for a command; prints help and returns null for --help. */
export function parseCommand<O extends NonNullable<ParseArgsConfig['options']>>(spec: CommandSpec<O>, argv: string[]): ParsedCommand | null {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: { ...spec.options, help: { type: 'boolean', short: 'h' } },
      allowPositionals: spec.allowPositionals ?? false,
      strict: true,
    });
  } catch (err) {
    throw new CliError(`${spec.name}: ${(err as Error).message.split('\n')[0]} (see pulltab ${spec.name} --help)`, 2);
  }
  if ((parsed.values as Record<string, unknown>).help) {
    process.stdout.write(helpText(spec as CommandSpec<ParseArgsConfig['options']>));
    return null;
  }
  return parsed as ParsedCommand;
}

export function flag(values: ParsedCommand['values'], name: string): boolean {
  return values[name] === true;
}

export function stringOption(values: ParsedCommand['values'], name: string): string | undefined {
  const value = values[name];
  return typeof value === 'string' ? value : undefined;
}

export function requireOption(command: string, values: Record<string, unknown>, name: string): string {
  const value = values[name];
  if (typeof value !== 'string' || value === '') throw new CliError(`${command}: --${name} is required (see pulltab ${command} --help)`, 2);
  return value;
}

export function numberOption(command: string, values: Record<string, unknown>, name: string, min: number): number | undefined {
  const value = values[name];
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n < min || String(value).trim() === '') {
    throw new CliError(`${command}: --${name} must be a number >= ${min}, got ${JSON.stringify(value)}`, 2);
  }
  return n;
}
