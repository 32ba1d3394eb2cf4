// Sealing under constant garbage collection, in a child process with a tiny young generation:
// on Node 20, exporting a freshly generated X25519 key deadlocked the process when a collection
// came in the middle of the export (src/crypto/seal.ts newEphemeral says how). The child seals
// for a few seconds and must exit on its own; a deadlocked one is killed at the bound and fails.
import t from 'tap';
import { spawn } from 'node:child_process';

const DIST = (path: string) => new URL(`../dist/${path}`, import.meta.url).href;
const SEAL_FOR_MS = 6_000;
const BOUND_MS = 30_000;

const child = `
import { sealMessage } from '${DIST('crypto/seal.js')}';
import { generateIdentity } from '${DIST('crypto/keys.js')}';
const sender = generateIdentity();
const recipients = [generateIdentity().publicKey, generateIdentity().publicKey];
const body = new Uint8Array(64);
const end = Date.now() + ${SEAL_FOR_MS};
let sealed = 0;
while (Date.now() < end && sealed < 1_000_000) {
  sealMessage(sender, recipients, body);
  sealed++;
}
console.log(sealed);
`;

t.test('sealing while the garbage collector runs all the time never hangs', async (t) => {
  const proc = spawn(process.execPath, ['--max-semi-space-size=1', '--input-type=module', '-e', child], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  proc.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  const timer = setTimeout(() => proc.kill('SIGKILL'), BOUND_MS);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => proc.once('exit', (c, s) => resolve([c, s])));
  clearTimeout(timer);
  t.equal(signal, null, `not killed at the ${BOUND_MS / 1000} s bound (a deadlocked child is)`);
  t.equal(code, 0, `exited by itself (${out.trim()})`);
  t.ok(Number(out) > 1000, `${Number(out)} messages sealed in ${SEAL_FOR_MS / 1000} s under constant collection (${process.version})`);
});
