import t from 'tap';
import { KEY_CACHE_CAPACITY, KeyCache } from '../src/crypto/key-cache.js';
import { keyIdAt, keyIdOf, keyOfId } from '../src/crypto/key-id.js';
import { __verifyKeyCache, generateIdentity, Signer, verifySignature } from '../src/crypto/keys.js';

t.test('KeyCache holds at most its capacity and evicts the least recently used', async (t) => {
  const cache = new KeyCache<number>(3);
  cache.set('a', 1);
  cache.set('b', 2);
  cache.set('c', 3);
  t.equal(cache.get('a'), 1, 'a is used: now the most recent');
  cache.set('d', 4); // evicts b, the least recently used
  t.equal(cache.size, 3, 'still 3 entries');
  t.equal(cache.get('b'), undefined, 'b was evicted');
  t.same([cache.get('a'), cache.get('c'), cache.get('d')], [1, 3, 4], 'a, c and d remain');
  cache.set('c', 30); // an update is not an insertion: nothing evicted
  t.equal(cache.size, 3);
  t.equal(cache.get('c'), 30);
  for (let i = 0; i < 100; i++) cache.set(`k${i}`, i);
  t.equal(cache.size, 3, 'a hundred insertions later, still 3');
  t.same([cache.get('k97'), cache.get('k98'), cache.get('k99')], [97, 98, 99], 'the newest three remain');
  t.throws(() => new KeyCache(0), RangeError);
});

t.test('KeyCache.getOrMake makes once per key and caches nothing when make throws', async (t) => {
  const cache = new KeyCache<string>(2);
  let made = 0;
  const make = (id: string): string => `made ${id} #${++made}`;
  t.equal(cache.getOrMake('x', make), 'made x #1');
  t.equal(cache.getOrMake('x', make), 'made x #1', 'a hit does not make again');
  t.throws(() => cache.getOrMake('bad', () => { throw new Error('refused'); }));
  t.equal(cache.size, 1, 'a refused key is not cached');
  t.equal(KEY_CACHE_CAPACITY >= 1024, true, 'the default holds a few thousand peers');
});

t.test('a key id is a one-to-one string of the key bytes, views included', async (t) => {
  const buf = new Uint8Array(40).map((_, i) => i * 7);
  t.equal(keyIdOf(buf.subarray(4, 36)), keyIdOf(Uint8Array.from(buf.subarray(4, 36))), 'a view and a copy of the same bytes');
  t.not(keyIdOf(buf.subarray(4, 36)), keyIdOf(buf.subarray(5, 37)), 'different bytes, different ids');
  t.equal(keyIdOf(buf.subarray(4, 36)).length, 32, 'one character per byte');
  t.equal(keyIdAt(buf, 4), keyIdOf(buf.subarray(4, 36)), 'read in place: the same id as the key on its own');
  t.equal(keyIdAt(Buffer.from(buf), 4), keyIdOf(buf.subarray(4, 36)), 'from a Buffer too');
  t.equal(keyIdOf(buf.subarray(4, 36)), Buffer.from(buf.subarray(4, 36)).toString('latin1'), 'the latin1 string every Map of keys has used');
  t.same([...keyOfId(keyIdAt(buf, 4))], [...buf.subarray(4, 36)], 'keyOfId gives the bytes back');
});

t.test('the verification-key cache stays bounded', async (t) => {
  const id = generateIdentity();
  const signature = new Signer(id).sign(Uint8Array.of(1));
  const message = Uint8Array.of(1);
  // Keys only need to be distinct to fill the cache; verification against them is false.
  for (let i = 0; i < __verifyKeyCache.capacity + 100; i++) {
    const key = generateIdentity().publicKey;
    verifySignature(key, message, signature);
  }
  t.equal(__verifyKeyCache.size, __verifyKeyCache.capacity, `holds exactly ${__verifyKeyCache.capacity}`);
  t.ok(verifySignature(id.publicKey, message, signature), 'an evicted key verifies again (rebuilt)');
});
