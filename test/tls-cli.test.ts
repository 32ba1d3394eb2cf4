// The README's TLS quick start as processes: `pulltab serve` with TLS, two CLI clients talking
// through it, and the certificate reloaded on SIGHUP (new connections get the new one).
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { createSelfSigned } from '../src/server/self-signed.js';
import { killRelay, removeDir, runCli, sleep, spawnRelay, tempDir, waitForSessions } from './helpers.js';

function servedFingerprint(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket: TLSSocket = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, minVersion: 'TLSv1.3' }, () => {
      resolve(socket.getPeerCertificate().fingerprint256);
      socket.destroy();
    });
    socket.on('error', reject);
  });
}

t.test('serve --tls-self-signed: two CLI clients talk through the relay over TLS', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const relay = await spawnRelay(join(dir, 'relay'), ['--port', '0', '--tls-self-signed']);
  t.teardown(() => killRelay(relay));
  t.match(relay.address, /^pulltabs:\/\//, 'the address says TLS');
  t.equal((await runCli(['keygen', '--out', join(dir, 'alice.key')])).code, 0);
  t.equal((await runCli(['keygen', '--out', join(dir, 'bob.key')])).code, 0);
  const bob = (await runCli(['id', '--key', join(dir, 'bob.key')])).stdout.trim();
  const listening = runCli(['listen', '--relay', relay.address, '--key', join(dir, 'bob.key'), '--count', '1', '--timeout', '60'], { timeoutMs: 70_000 });
  await waitForSessions(relay, 1);
  const sent = await runCli(['send', '--relay', relay.address, '--key', join(dir, 'alice.key'), '--to', bob, 'hello over TLS'], { timeoutMs: 40_000 });
  t.equal(sent.code, 0, sent.stderr);
  const heard = await listening;
  t.equal(heard.code, 0, heard.stderr);
  t.match(heard.stdout, /: hello over TLS\n$/);
});

t.test('SIGHUP reloads the certificate: new connections get the new one, the relay keeps serving', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  const first = createSelfSigned('first');
  writeFileSync(certPath, first.cert);
  writeFileSync(keyPath, first.key, { mode: 0o600 });
  const relay = await spawnRelay(join(dir, 'relay'), ['--port', '0', '--tls-cert', certPath, '--tls-key', keyPath]);
  t.teardown(() => killRelay(relay));
  t.equal(await servedFingerprint(relay.port), new X509Certificate(first.cert).fingerprint256);

  const second = createSelfSigned('second');
  writeFileSync(certPath, second.cert);
  writeFileSync(keyPath, second.key, { mode: 0o600 });
  relay.proc.kill('SIGHUP');
  for (let i = 0; i < 200 && !relay.output().includes('"tls_reloaded"'); i++) await sleep(25);
  t.match(relay.output(), /"tls_reloaded"/);
  t.equal(await servedFingerprint(relay.port), new X509Certificate(second.cert).fingerprint256, 'the renewed certificate is served');

  // A broken pair is refused and the current one stays.
  writeFileSync(keyPath, createSelfSigned('mismatch').key, { mode: 0o600 });
  relay.proc.kill('SIGHUP');
  for (let i = 0; i < 200 && !relay.output().includes('"tls_reload_failed"'); i++) await sleep(25);
  t.match(relay.output(), /"tls_reload_failed"/);
  t.equal(await servedFingerprint(relay.port), new X509Certificate(second.cert).fingerprint256, 'the previous certificate stays in use');
  t.notMatch(relay.output(), /PRIVATE KEY/, 'no key material in the log');

  const keygen = await runCli(['keygen', '--out', join(dir, 'a.key')]);
  t.equal(keygen.code, 0);
  const me = (await runCli(['id', '--key', join(dir, 'a.key')])).stdout.trim();
  const sent = await runCli(['send', '--relay', relay.address, '--key', join(dir, 'a.key'), '--to', me, '--store', 'after the reload'], { timeoutMs: 40_000 });
  t.equal(sent.code, 0, sent.stderr);
});
