-- Schema version 2: authorization grants and per-target enforcement modes.

-- A grant: caller may call target (methods, paths) until expires_at. The full grant is in doc (JSON);
-- caller, target and source are columns for filtering.
CREATE TABLE grants (
	id         TEXT COLLATE "C" PRIMARY KEY,
	caller     TEXT COLLATE "C" NOT NULL,
	target     TEXT COLLATE "C" NOT NULL,
	source     TEXT COLLATE "C" NOT NULL,
	doc        TEXT COLLATE "C" NOT NULL,
	created_at TEXT COLLATE "C",
	expires_at TEXT COLLATE "C",
	revision   BIGINT NOT NULL
);
CREATE INDEX grants_by_target ON grants (target, caller);

-- Targets not in enforce mode (absent means enforce).
CREATE TABLE target_modes (
	target     TEXT COLLATE "C" PRIMARY KEY,
	mode       TEXT COLLATE "C" NOT NULL,
	updated_at TEXT COLLATE "C",
	revision   BIGINT NOT NULL
);
