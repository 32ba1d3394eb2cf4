// test/store-forward.test.ts's cases against a relay of 2 workers (`pulltab serve --workers 2`,
// the mailboxes in the primary's LMDB: ./relay-under-test.ts). A live recipient is answered STORED
// there, not DELIVERED (docs/OPERATIONS.md, Workers); the case that fails an LMDB commit in this
// process runs only against one process.
process.env.PULLTAB_TEST_WORKERS = '2';
await import('./store-forward.test.js');
