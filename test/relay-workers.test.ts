// test/relay.test.ts's cases, unchanged, against a relay of 2 workers (`pulltab serve --workers 2`,
// clients spread over both by round-robin: ./relay-under-test.ts), including the original relay's
// acceptance cases (10 clients × 101 random messages, several recipients, relay restart).
process.env.PULLTAB_TEST_WORKERS = '2';
await import('./relay.test.js');
