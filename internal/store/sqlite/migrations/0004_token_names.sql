-- Schema version 4: a join token's name may be given again once no live agent or unused token holds it,
-- so that a node re-joins under the same agent SPIFFE ID. The name was UNIQUE; the store checks instead.
CREATE TABLE join_tokens_v4 (
	id         TEXT PRIMARY KEY,
	name       TEXT, -- NULL when the operator gave no name
	hash       BLOB NOT NULL UNIQUE,
	created_at TEXT,
	expires_at TEXT,
	used_at    TEXT,
	used_by    TEXT NOT NULL DEFAULT ''
);
INSERT INTO join_tokens_v4 (id, name, hash, created_at, expires_at, used_at, used_by)
	SELECT id, name, hash, created_at, expires_at, used_at, used_by FROM join_tokens;
DROP TABLE join_tokens;
ALTER TABLE join_tokens_v4 RENAME TO join_tokens;
CREATE INDEX join_tokens_by_name ON join_tokens (name);
