// Schema version 1: the mailboxes. Every write takes the one pulltab_meta row's lock first, so that
// the writers of every relay sharing the database serialize on it: the relay-wide quota and the
// seq counter are exact, and no two transactions can take row locks in opposite orders.
//
//   pulltab_meta     one row: the last seq given, the relay-wide entry count, bytes and recipients
//   pulltab_usage    per recipient with entries: count and bytes (the quota check reads these)
//   pulltab_entries  one row per (recipient, seq); the body inline (body_id 0) when the message was
//                    stored for one recipient, else in pulltab_bodies (stored once, counted by refs)
//   pulltab_bodies   a body shared by several entries; its id is the seq of its first entry
//
// Costs and times are the contract's (src/store/mailbox.ts): cost = body + wrapped key bytes, times in
// ms since the epoch on the relay's clock. Deletions go through pulltab_forget, which keeps usage,
// totals and body refs in step with the entries in the same transaction.
export const version = 1;

export const sql = `
CREATE TABLE pulltab_meta (
  id integer PRIMARY KEY CHECK (id = 1),
  last_seq bigint NOT NULL,
  count bigint NOT NULL,
  bytes bigint NOT NULL,
  recipients bigint NOT NULL
);
INSERT INTO pulltab_meta VALUES (1, 0, 0, 0, 0);

CREATE TABLE pulltab_usage (
  recipient bytea PRIMARY KEY,
  count integer NOT NULL,
  bytes bigint NOT NULL
);

CREATE TABLE pulltab_bodies (
  id bigint PRIMARY KEY,
  body bytea NOT NULL,
  refs integer NOT NULL
);

CREATE TABLE pulltab_entries (
  recipient bytea NOT NULL,
  seq bigint NOT NULL,
  sender bytea NOT NULL,
  storage_key bytea,
  wrapped_key bytea NOT NULL,
  body bytea,
  body_id bigint NOT NULL,
  cost bigint NOT NULL,
  stored_at bigint NOT NULL,
  expires_at bigint NOT NULL,
  PRIMARY KEY (recipient, seq)
);
-- replacement looks entries up by (recipient, sender, storage key); at most one each
CREATE UNIQUE INDEX pulltab_entries_replace ON pulltab_entries (recipient, sender, storage_key) WHERE storage_key IS NOT NULL;
-- the TTL sweep deletes by this range without reading live entries
CREATE INDEX pulltab_entries_expiry ON pulltab_entries (expires_at);
CREATE INDEX pulltab_entries_shared ON pulltab_entries (body_id) WHERE body_id <> 0;

-- Accounts for deleted entries (their recipients, costs and body ids): usage, totals, body refs.
CREATE FUNCTION pulltab_forget(p_recipients bytea[], p_costs bigint[], p_bodies bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  gone bigint;
BEGIN
  UPDATE pulltab_usage u SET count = u.count - g.n, bytes = u.bytes - g.b
    FROM (SELECT x.r, count(*) AS n, sum(x.c) AS b FROM unnest(p_recipients, p_costs) AS x(r, c) GROUP BY x.r) g
    WHERE u.recipient = g.r;
  WITH d AS (DELETE FROM pulltab_usage WHERE recipient = ANY(p_recipients) AND count <= 0 RETURNING 1)
    SELECT count(*) INTO gone FROM d;
  UPDATE pulltab_meta SET count = count - cardinality(p_costs),
    bytes = bytes - (SELECT coalesce(sum(x), 0) FROM unnest(p_costs) AS x), recipients = recipients - gone
    WHERE id = 1;
  UPDATE pulltab_bodies o SET refs = o.refs - g.n
    FROM (SELECT x AS id, count(*) AS n FROM unnest(p_bodies) AS x WHERE x <> 0 GROUP BY x) g
    WHERE o.id = g.id;
  DELETE FROM pulltab_bodies WHERE id = ANY(p_bodies) AND refs <= 0;
END $$;

-- Deletes the entries named by (recipient, first seq, last seq) ranges, recipients as 32-byte
-- slices of one blob, and accounts for them; returns how many existed. A range holds seqs that
-- were all named (the relay makes ranges only of consecutive seqs it was given), so no other entry
-- is in it. Acknowledgements, and the entries a batch of stores replaces (ranges of one). The
-- caller holds the meta row's lock.
CREATE FUNCTION pulltab_delete_ranges(p_recipients bytea, p_first bigint[], p_last bigint[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  rs bytea[]; cs bigint[]; bs bigint[];
BEGIN
  WITH d AS (
    DELETE FROM pulltab_entries e USING (
      SELECT substring(p_recipients FROM (x.i::integer - 1) * 32 + 1 FOR 32) AS r, x.lo, x.hi
      FROM unnest(p_first, p_last) WITH ORDINALITY AS x(lo, hi, i)
    ) k WHERE e.recipient = k.r AND e.seq BETWEEN k.lo AND k.hi
    RETURNING e.recipient, e.cost, e.body_id)
  SELECT array_agg(d.recipient), array_agg(d.cost), array_agg(d.body_id) INTO rs, cs, bs FROM d;
  IF rs IS NULL THEN RETURN 0; END IF;
  PERFORM pulltab_forget(rs, cs, bs);
  RETURN cardinality(rs);
END $$;

-- Acknowledgements, of one recipient or of several at once (grouped by the relay), as ranges.
CREATE FUNCTION pulltab_ack(p_recipients bytea, p_first bigint[], p_last bigint[]) RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1 FROM pulltab_meta WHERE id = 1 FOR UPDATE;
  RETURN pulltab_delete_ranges(p_recipients, p_first, p_last);
END $$;

-- Deletes by what the admin and the sweep name: 'expired' (expires_at <= p_at), 'older'
-- (stored_at < p_at) or 'recipient' (p_recipient's mailbox). Returns how many were deleted.
CREATE FUNCTION pulltab_remove(p_kind text, p_at bigint, p_recipient bytea) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  rs bytea[]; cs bigint[]; bs bigint[];
BEGIN
  PERFORM 1 FROM pulltab_meta WHERE id = 1 FOR UPDATE;
  IF p_kind = 'expired' THEN
    WITH d AS (DELETE FROM pulltab_entries WHERE expires_at <= p_at RETURNING recipient, cost, body_id)
      SELECT array_agg(d.recipient), array_agg(d.cost), array_agg(d.body_id) INTO rs, cs, bs FROM d;
  ELSIF p_kind = 'older' THEN
    WITH d AS (DELETE FROM pulltab_entries WHERE stored_at < p_at RETURNING recipient, cost, body_id)
      SELECT array_agg(d.recipient), array_agg(d.cost), array_agg(d.body_id) INTO rs, cs, bs FROM d;
  ELSIF p_kind = 'recipient' THEN
    WITH d AS (DELETE FROM pulltab_entries WHERE recipient = p_recipient RETURNING recipient, cost, body_id)
      SELECT array_agg(d.recipient), array_agg(d.cost), array_agg(d.body_id) INTO rs, cs, bs FROM d;
  ELSE
    RAISE EXCEPTION 'pulltab_remove: unknown kind %', p_kind;
  END IF;
  IF rs IS NULL THEN RETURN 0; END IF;
  PERFORM pulltab_forget(rs, cs, bs);
  RETURN cardinality(rs);
END $$;

-- One batch of stores, planned by the relay under the meta lock it took in this transaction
-- (src/store/postgres/plan.ts): delete the committed entries it replaces, then insert the shared
-- bodies and the entries, and add them to usage and totals. Keys are fixed-width slices of one
-- blob each (32 bytes; storage keys 16, where e_keyed); wrapped keys and bodies are slices of one
-- blob at offsets: binary parameters, no per-row encoding.
CREATE FUNCTION pulltab_store(
  d_recipients bytea, d_seqs bigint[],
  e_recipients bytea, e_seqs bigint[], e_senders bytea, e_storage_keys bytea, e_keyed boolean[],
  e_wrapped bytea, e_wrapped_at integer[], e_wrapped_len integer[],
  e_bodies bytea, e_body_at integer[], e_body_len integer[], e_body_ids bigint[],
  e_costs bigint[], e_stored_at bigint[], e_expires_at bigint[],
  b_ids bigint[], b_bodies bytea, b_at integer[], b_len integer[], b_refs integer[],
  p_last_seq bigint
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  fresh bigint;
BEGIN
  IF cardinality(d_seqs) > 0 THEN
    PERFORM pulltab_delete_ranges(d_recipients, d_seqs, d_seqs);
  END IF;
  INSERT INTO pulltab_bodies (id, body, refs)
    SELECT x.id, substring(b_bodies FROM x.at + 1 FOR x.len), x.refs FROM unnest(b_ids, b_at, b_len, b_refs) AS x(id, at, len, refs);
  INSERT INTO pulltab_entries (recipient, seq, sender, storage_key, wrapped_key, body, body_id, cost, stored_at, expires_at)
    SELECT substring(e_recipients FROM (x.i::integer - 1) * 32 + 1 FOR 32), x.seq, substring(e_senders FROM (x.i::integer - 1) * 32 + 1 FOR 32),
      CASE WHEN x.keyed THEN substring(e_storage_keys FROM (x.i::integer - 1) * 16 + 1 FOR 16) END,
      substring(e_wrapped FROM x.wat + 1 FOR x.wlen),
      CASE WHEN x.body_id = 0 THEN substring(e_bodies FROM x.bat + 1 FOR x.blen) END,
      x.body_id, x.cost, x.stored_at, x.expires_at
    FROM unnest(e_seqs, e_keyed, e_wrapped_at, e_wrapped_len, e_body_at, e_body_len, e_body_ids, e_costs, e_stored_at, e_expires_at)
      WITH ORDINALITY AS x(seq, keyed, wat, wlen, bat, blen, body_id, cost, stored_at, expires_at, i);
  WITH up AS (
    INSERT INTO pulltab_usage AS u (recipient, count, bytes)
      SELECT g.r, count(*), sum(g.c) FROM (
        SELECT substring(e_recipients FROM (x.i::integer - 1) * 32 + 1 FOR 32) AS r, x.c FROM unnest(e_costs) WITH ORDINALITY AS x(c, i)
      ) g GROUP BY g.r
    ON CONFLICT (recipient) DO UPDATE SET count = u.count + EXCLUDED.count, bytes = u.bytes + EXCLUDED.bytes
    RETURNING (xmax = 0) AS inserted)
  SELECT count(*) FILTER (WHERE inserted) INTO fresh FROM up;
  UPDATE pulltab_meta SET last_seq = greatest(last_seq, p_last_seq), count = count + cardinality(e_seqs),
    bytes = bytes + (SELECT coalesce(sum(x), 0) FROM unnest(e_costs) AS x), recipients = recipients + fresh
    WHERE id = 1;
END $$;
`;
