// Schema version 2: policies, the keys assigned them and the blocked keys, shared by every relay on
// the database. The rules of the policy store contract (src/store/policy-store.ts) are the
// database's own: a key is assigned only a policy that exists, and a policy still assigned cannot be
// removed (the foreign key). Every write bumps pulltab_policy_version in its transaction, which the
// relays poll to see each other's changes (one small read per interval, never per message).
export const version = 2;

export const sql = `
CREATE TABLE pulltab_policies (
  name text PRIMARY KEY,
  policy json NOT NULL,
  updated_at bigint NOT NULL
);
CREATE TABLE pulltab_assignments (
  recipient bytea PRIMARY KEY CHECK (length(recipient) = 32),
  policy text NOT NULL REFERENCES pulltab_policies (name) ON DELETE RESTRICT,
  updated_at bigint NOT NULL
);
CREATE INDEX pulltab_assignments_policy ON pulltab_assignments (policy);
CREATE TABLE pulltab_blocked (
  recipient bytea PRIMARY KEY CHECK (length(recipient) = 32),
  blocked_at bigint NOT NULL
);
CREATE TABLE pulltab_policy_version (
  id integer PRIMARY KEY CHECK (id = 1),
  version bigint NOT NULL
);
INSERT INTO pulltab_policy_version VALUES (1, 0);
`;
