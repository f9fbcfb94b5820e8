-- Schema version 3: policy bundle history and the revision each agent enforces.

-- Every policy revision the server built or refused. At most one row is active.
CREATE TABLE policy_bundles (
	seq        INTEGER PRIMARY KEY AUTOINCREMENT,
	revision   TEXT NOT NULL,
	created_at TEXT NOT NULL,
	status     TEXT NOT NULL,
	error      TEXT NOT NULL DEFAULT '',
	bundle     BLOB,
	modules    TEXT,
	active     INTEGER NOT NULL DEFAULT 0,
	pinned     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX policy_bundles_by_revision ON policy_bundles (revision);

-- The policy revision each agent last reported, and since when it has enforced it.
CREATE TABLE agent_policy (
	agent_id TEXT PRIMARY KEY,
	revision TEXT NOT NULL,
	since    TEXT NOT NULL,
	error    TEXT NOT NULL DEFAULT ''
);
