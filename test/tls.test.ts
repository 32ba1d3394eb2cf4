// TLS on the relay port, over real sockets on loopback: round trips, the wrong transport on
// either side, a real TLS-terminating proxy (which the channel binding must expose), and the
// self-signed certificate's life in the data directory.
import t from 'tap';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { createServer as createTcpServer, connect as tcpConnect, type AddressInfo, type Server } from 'node:net';
import { connect as tlsConnect, createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { ConnectError } from '../src/client/client.js';
import { generateIdentity } from '../src/crypto/keys.js';
import { formatRelayAddress, parseRelayAddress } from '../src/protocol/address.js';
import { Code, FrameType } from '../src/protocol/constants.js';
import { parseClose } from '../src/protocol/frames.js';
import { ConfigError, defaultConfig } from '../src/server/config.js';
import { createSelfSigned } from '../src/server/self-signed.js';
import { selfSignedPaths } from '../src/server/tls.js';
import { connectClient, makeClient, nextMessages, RawPeer, removeDir, sleep, startRelay, tempDir } from './helpers.js';

t.test('a TLS relay prints a pulltabs:// address and carries live and stored messages', async (t) => {
  const relay = await startRelay({ tlsSelfSigned: true });
  t.teardown(() => relay.close());
  t.match(relay.address, /^pulltabs:\/\//);
  t.equal(parseRelayAddress(relay.address).tls, true);
  const a = await connectClient(relay);
  const b = await connectClient(relay);
  t.teardown(() => Promise.all([a.close(), b.close()]));
  const got = nextMessages(b, 1);
  const live = await a.send([b.identity.publicKey], 'over TLS');
  t.same(live.outcomes.map((o) => o.codeName), ['DELIVERED']);
  t.equal(Buffer.from((await got)[0].body).toString(), 'over TLS');

  const offline = generateIdentity();
  const stored = await a.send([offline.publicKey], 'kept for later', { store: true });
  t.same(stored.outcomes.map((o) => o.codeName), ['STORED']);
  const c = makeClient(relay, { identity: offline });
  t.teardown(() => c.close());
  const later = nextMessages(c, 1);
  await c.connect();
  const [m] = await later;
  t.equal(Buffer.from(m.body).toString(), 'kept for later');
  t.ok(m.fromMailbox);
});

t.test('a plain client on a TLS port is told TRANSPORT_MISMATCH in plain TCP, and the relay counts it', async (t) => {
  const relay = await startRelay({ tlsSelfSigned: true });
  t.teardown(() => relay.close());
  const plain = formatRelayAddress({ ...parseRelayAddress(relay.address), tls: false });
  const started = Date.now();
  const client = makeClient(plain, { reconnect: true });
  t.teardown(() => client.close());
  const err = await client.connect().then(() => null, (e: ConnectError) => e);
  t.type(err, ConnectError);
  t.equal(err?.code, Code.TRANSPORT_MISMATCH, 'fatal even with reconnect on: retrying cannot help');
  t.match(err?.message, /TRANSPORT_MISMATCH.*pulltabs:\/\//);
  t.ok(Date.now() - started < 8000, 'well before the 10 s connect timeout');
  t.equal(relay.stats.transportMismatches, 1);

  // A raw peer that speaks first in plain TCP gets the same answer at once.
  const peer = new RawPeer(relay.port);
  t.teardown(() => peer.close());
  peer.write(Buffer.from([FrameType.CLIENT_HELLO, 0, 0, 0, 0]));
  const close = await peer.next(2000);
  t.equal(close?.type, FrameType.CLOSE);
  t.equal(parseClose(close!.payload, 0, close!.payload.length)?.code, Code.TRANSPORT_MISMATCH);
  t.ok(await peer.waitClosed());
  t.equal(relay.stats.transportMismatches, 2);
  t.match(await relay.statsSnapshot(), { handshakes: { transportMismatch: 2 } }, 'admin stats show it');
});

t.test('a TLS client on a plain port gets a clear error, and the relay counts the ClientHello', async (t) => {
  const relay = await startRelay();
  t.teardown(() => relay.close());
  const client = makeClient(formatRelayAddress({ ...parseRelayAddress(relay.address), tls: true }), { reconnect: true });
  t.teardown(() => client.close());
  const err = await client.connect().then(() => null, (e: ConnectError) => e);
  t.equal(err?.code, Code.TRANSPORT_MISMATCH);
  t.match(err?.message, /does not speak TLS.*pulltab:\/\//);
  for (let i = 0; i < 100 && relay.stats.transportMismatches === 0; i++) await sleep(20);
  t.equal(relay.stats.transportMismatches, 1, 'the relay saw a TLS record where CLIENT_HELLO belongs');
});

/** A real TLS-terminating proxy: TLS toward the client with its own certificate, its own TLS to the relay, bytes piped. */
async function terminatingProxy(relayPort: number): Promise<Server> {
  const own = createSelfSigned('not the relay');
  const server = createTlsServer({ cert: own.cert, key: own.key, minVersion: 'TLSv1.3' }, (front) => {
    const back = tlsConnect({ host: '127.0.0.1', port: relayPort, rejectUnauthorized: false, minVersion: 'TLSv1.3' });
    front.pipe(back).pipe(front);
    front.on('error', () => back.destroy());
    back.on('error', () => front.destroy());
    front.on('close', () => back.destroy());
    back.on('close', () => front.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

/** A layer-4 pass-through (what a TCP load balancer does): TLS runs end to end through it. */
async function tcpPassThrough(relayPort: number): Promise<Server> {
  const server = createTcpServer((front) => {
    const back = tcpConnect({ host: '127.0.0.1', port: relayPort });
    front.pipe(back).pipe(front);
    front.on('error', () => back.destroy());
    back.on('error', () => front.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

t.test('a TLS-terminating proxy is detected: the channel bindings differ, both signatures fail, the relay counts it', async (t) => {
  const relay = await startRelay({ tlsSelfSigned: true });
  t.teardown(() => relay.close());
  const proxy = await terminatingProxy(relay.port);
  t.teardown(() => proxy.close());
  const viaProxy = formatRelayAddress({ ...parseRelayAddress(relay.address), port: (proxy.address() as AddressInfo).port });
  const client = makeClient(viaProxy, { reconnect: true });
  t.teardown(() => client.close());
  const err = await client.connect().then(() => null, (e: ConnectError) => e);
  t.equal(err?.code, Code.AUTH_FAILED, 'fatal: the client gives up');
  t.match(err?.message, /TLS-terminating proxy.*channel binding/);
  for (let i = 0; i < 100 && relay.stats.tlsAuthFailed === 0; i++) await sleep(20);
  t.equal(relay.stats.tlsAuthFailed, 1, 'the relay refused the client signature over its own channel');
  t.equal(relay.stats.handshakesRefused.authFailed, 1);
  t.equal(relay.router.sessions.size, 0, 'nobody got in');
  t.match(await relay.statsSnapshot(), { handshakes: { tlsAuthFailed: 1 } });

  // The same relay through a TCP pass-through: TLS is end to end, so it works.
  const l4 = await tcpPassThrough(relay.port);
  t.teardown(() => l4.close());
  const through = await connectClient(formatRelayAddress({ ...parseRelayAddress(relay.address), port: (l4.address() as AddressInfo).port }));
  t.teardown(() => through.close());
  t.ok(through.connected, 'a layer-4 pass-through keeps the channel binding intact');
});

t.test('over TLS the relay refuses a signature without the channel binding, and one over flipped flags', async (t) => {
  const relay = await startRelay({ tlsSelfSigned: true });
  t.teardown(() => relay.close());
  const unbound = new RawPeer(relay.port, { tls: true });
  t.teardown(() => unbound.close());
  t.equal((await unbound.handshake(generateIdentity(), { omitBinding: true })).status, Code.AUTH_FAILED);
  const flipped = new RawPeer(relay.port, { tls: true });
  t.teardown(() => flipped.close());
  t.equal((await flipped.handshake(generateIdentity(), { flags: 0x01, signedFlags: 0x00 })).status, Code.AUTH_FAILED);
  const honest = new RawPeer(relay.port, { tls: true });
  t.teardown(() => honest.close());
  t.equal((await honest.handshake()).status, Code.OK);
});

t.test('the self-signed certificate is created once, key mode 0600, and reused', async (t) => {
  const dir = tempDir();
  t.teardown(() => removeDir(dir));
  const paths = selfSignedPaths(dir);
  const first = await startRelay({ tlsSelfSigned: true }, dir);
  const served1 = await servedCertificate(first.port);
  await first.close();
  t.equal(statSync(paths.key).mode & 0o777, 0o600, 'the key is readable by its owner only');
  const cert = readFileSync(paths.cert, 'utf8');
  const x509 = new X509Certificate(cert);
  t.equal(x509.subject, 'CN=pulltab relay');
  t.ok(x509.verify(x509.publicKey), 'self-signed');
  t.equal(served1, x509.fingerprint256, 'the relay serves the certificate in its data directory');
  const keyBefore = readFileSync(paths.key, 'utf8');

  const second = await startRelay({ tlsSelfSigned: true }, dir);
  t.teardown(() => second.close());
  t.equal(readFileSync(paths.cert, 'utf8'), cert, 'certificate reused');
  t.equal(readFileSync(paths.key, 'utf8'), keyBefore, 'key reused');
  t.equal(await servedCertificate(second.port), x509.fingerprint256);
});

t.test('TLS settings are checked: a certificate needs its key, and self-signed excludes both', async (t) => {
  t.throws(() => defaultConfig({ tlsCert: '/x/cert.pem' }), ConfigError);
  t.throws(() => defaultConfig({ tlsSelfSigned: true, tlsCert: '/x/cert.pem', tlsKey: '/x/key.pem' }), ConfigError);
  t.throws(() => defaultConfig({ tlsKey: '/x/key.pem' }), /tlsCert and tlsKey go together/);
  await t.rejects(startRelay({ tlsCert: '/nonexistent/cert.pem', tlsKey: '/nonexistent/key.pem' }), /cannot read tlsCert/);
});

/** The SHA-256 fingerprint of the certificate a TLS port serves. */
export function servedCertificate(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket: TLSSocket = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, minVersion: 'TLSv1.3' }, () => {
      const fingerprint = socket.getPeerCertificate().fingerprint256;
      socket.destroy();
      resolve(fingerprint);
    });
    socket.on('error', reject);
  });
}

t.test('over TLS the handshake deadline counts from accept, the TLS handshake included', async (t) => {
  const relay = await startRelay({ tlsSelfSigned: true, handshakeTimeoutMs: 600 });
  t.teardown(() => relay.close());
  const started = Date.now();
  const peer = new RawPeer(relay.port, { tls: true });
  t.teardown(() => peer.close());
  t.equal((await peer.next())?.type, FrameType.SERVER_HELLO, 'TLS is up and the relay spoke first');
  const close = await peer.next(3000); // and then nothing from us
  t.equal(close?.type, FrameType.CLOSE);
  t.equal(parseClose(close!.payload, 0, close!.payload.length)?.code, Code.HANDSHAKE_TIMEOUT, 'told inside TLS');
  const elapsed = Date.now() - started;
  t.ok(elapsed >= 550 && elapsed < 1500, `closed at the deadline from accept (${elapsed} ms)`);
  t.equal(relay.stats.handshakesTimedOut, 1);
});

t.test('the self-signed certificate is well-formed X.509: v3, positive serial, valid from yesterday to 9999, ECDSA P-256', async (t) => {
  const now = new Date('2030-06-15T12:00:00Z');
  const pair = createSelfSigned('pulltab relay', now);
  const x509 = new X509Certificate(pair.cert);
  t.equal(x509.subject, 'CN=pulltab relay');
  t.equal(x509.issuer, x509.subject);
  t.ok(x509.verify(x509.publicKey), 'signed by its own key');
  t.equal(new Date(x509.validFrom).toISOString(), '2030-06-14T12:00:00.000Z');
  t.equal(new Date(x509.validTo).getUTCFullYear(), 9999);
  t.match(x509.serialNumber, /^[0-7][0-9A-F]{31}$/, '16 bytes, top bit clear');
  t.equal(x509.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  t.ok(x509.checkPrivateKey(createPrivateKey(pair.key)), 'the key file holds its private key');
  t.not(createSelfSigned().cert, createSelfSigned().cert, 'a new key each time');
});
