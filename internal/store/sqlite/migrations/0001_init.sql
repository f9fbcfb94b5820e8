-- Schema version 1: the initial Kith store.
--
-- Times are TEXT in UTC RFC 3339 with nanoseconds (NULL when zero); durations are INTEGER nanoseconds;
-- SPIFFE IDs are TEXT ('' when zero); selectors, DNS names and labels are JSON.

-- The store-wide revision: one row, bumped once by every change transaction.
CREATE TABLE revision (
	id       INTEGER PRIMARY KEY CHECK (id = 1),
	revision INTEGER NOT NULL
);
INSERT INTO revision (id, revision) VALUES (1, 0);

-- One row per object changed by a transaction, so consumers can compute deltas from any revision.
CREATE TABLE changes (
	seq       INTEGER PRIMARY KEY AUTOINCREMENT,
	revision  INTEGER NOT NULL,
	kind      TEXT    NOT NULL,
	object_id TEXT    NOT NULL,
	deleted   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX changes_by_revision ON changes (revision);

CREATE TABLE entries (
	id             TEXT    PRIMARY KEY,
	spiffe_id      TEXT    NOT NULL,
	parent_id      TEXT    NOT NULL DEFAULT '',
	node_selectors TEXT    NOT NULL,
	selectors      TEXT    NOT NULL,
	-- SHA-256 over SPIFFE ID, parent and the sorted node selectors and selectors: two entries that would
	-- match the same workloads the same way are refused.
	dedup_key      TEXT    NOT NULL UNIQUE,
	x509_ttl       INTEGER NOT NULL DEFAULT 0,
	jwt_ttl        INTEGER NOT NULL DEFAULT 0,
	dns_names      TEXT    NOT NULL,
	labels         TEXT    NOT NULL,
	created_at     TEXT,
	updated_at     TEXT,
	revision       INTEGER NOT NULL
);
CREATE INDEX entries_by_spiffe_id ON entries (spiffe_id, id);
CREATE INDEX entries_by_parent_id ON entries (parent_id);

CREATE TABLE join_tokens (
	id         TEXT PRIMARY KEY,
	name       TEXT UNIQUE, -- NULL when the operator gave no name
	hash       BLOB NOT NULL UNIQUE,
	created_at TEXT,
	expires_at TEXT,
	used_at    TEXT,
	used_by    TEXT NOT NULL DEFAULT ''
);

CREATE TABLE agents (
	id               TEXT    PRIMARY KEY,
	attestation_type TEXT    NOT NULL,
	selectors        TEXT    NOT NULL,
	serial_number    TEXT    NOT NULL,
	expires_at       TEXT,
	created_at       TEXT,
	updated_at       TEXT,
	evicted          INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE authorities (
	id           TEXT PRIMARY KEY,
	kind         TEXT NOT NULL,
	state        TEXT NOT NULL,
	key_id       TEXT NOT NULL,
	cert_der     BLOB,
	public_key   BLOB,
	parent_id    TEXT NOT NULL DEFAULT '',
	not_before   TEXT,
	not_after    TEXT,
	created_at   TEXT,
	activated_at TEXT,
	retired_at   TEXT
);

-- The append-only, hash-chained audit log. See audit.go for the hash encoding.
CREATE TABLE audit (
	seq       INTEGER PRIMARY KEY,
	time      TEXT    NOT NULL,
	actor     TEXT    NOT NULL,
	action    TEXT    NOT NULL,
	target    TEXT    NOT NULL,
	detail    TEXT    NOT NULL,
	revision  INTEGER NOT NULL,
	prev_hash BLOB    NOT NULL,
	hash      BLOB    NOT NULL
);

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
	SELECT RAISE(ABORT, 'audit log is append-only: rows cannot be updated');
END;

CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
	SELECT RAISE(ABORT, 'audit log is append-only: rows cannot be deleted');
END;
