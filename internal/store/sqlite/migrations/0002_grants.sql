-- Schema version 2: authorization grants and per-target enforcement modes.

-- A grant: caller may call target (methods, paths) until expires_at. The full grant is in doc (JSON);
-- caller, target and source are columns for filtering.
CREATE TABLE grants (
	id         TEXT PRIMARY KEY,
	caller     TEXT NOT NULL,
	target     TEXT NOT NULL,
	source     TEXT NOT NULL,
	doc        TEXT NOT NULL,
	created_at TEXT,
	expires_at TEXT,
	revision   INTEGER NOT NULL
);
CREATE INDEX grants_by_target ON grants (target, caller);

-- Targets not in enforce mode (absent means enforce).
CREATE TABLE target_modes (
	target     TEXT PRIMARY KEY,
	mode       TEXT NOT NULL,
	updated_at TEXT,
	revision   INTEGER NOT NULL
);
