// pulltab keygen and pulltab id: make an identity file, show an identity's public key.
import { encodeKey, generateIdentity, KeyFormatError, readIdentityFile, writeIdentityFile, type Identity } from '../crypto/keys.js';
import { CliError, parseCommand, requireOption } from './args.js';

export function keygen(argv: string[]): number {
  const parsed = parseCommand({
    name: 'keygen',
    usage: 'keygen --out FILE',
    description: 'Writes a new Ed25519 identity to FILE (mode 0600, never overwriting) and prints its public key.',
    options: { out: { type: 'string' } },
    help: { '--out FILE': 'where to write the identity' },
  }, argv);
  if (!parsed) return 0;
  const out = requireOption('keygen', parsed.values, 'out');
  const identity = generateIdentity();
  try {
    writeIdentityFile(out, identity);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new CliError(`keygen: ${out} already exists; not overwriting an identity`);
    throw new CliError(`keygen: cannot write ${out}: ${code ?? (err as Error).message}`);
  }
  process.stdout.write(encodeKey(identity.publicKey) + '\n');
  return 0;
}

export function id(argv: string[]): number {
  const parsed = parseCommand({
    name: 'id',
    usage: 'id --key FILE',
    description: 'Prints the public key of an identity file.',
    options: { key: { type: 'string' } },
    help: { '--key FILE': 'identity file (from pulltab keygen)' },
  }, argv);
  if (!parsed) return 0;
  process.stdout.write(encodeKey(loadIdentity('id', requireOption('id', parsed.values, 'key')).publicKey) + '\n');
  return 0;
}

export function loadIdentity(command: string, path: string): Identity {
  try {
    return readIdentityFile(path);
  } catch (err) {
    if (err instanceof KeyFormatError) throw new CliError(`${command}: ${err.message}`);
    throw err;
  }
}
