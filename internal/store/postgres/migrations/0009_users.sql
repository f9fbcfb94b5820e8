-- Schema version 9 (issue 18; the port of SQLite's 0011_users.sql): people. Users (spiffe://TD/user/<name>),
-- their one-time enrolment codes (only the SHA-256 of the secret), their logins (one per device; the serial
-- of the certificate that may renew next), and their access requests. Each row's full record is in doc
-- (JSON); the columns are what lookups and order use.
CREATE TABLE users (
	name       TEXT COLLATE "C" PRIMARY KEY,
	doc        TEXT COLLATE "C" NOT NULL,
	revision   BIGINT NOT NULL
);

CREATE TABLE enrolment_codes (
	id         TEXT COLLATE "C" PRIMARY KEY,
	hash       BYTEA NOT NULL UNIQUE,
	user_name  TEXT COLLATE "C" NOT NULL,
	doc        TEXT COLLATE "C" NOT NULL
);

CREATE TABLE user_logins (
	id         TEXT COLLATE "C" PRIMARY KEY,
	user_name  TEXT COLLATE "C" NOT NULL,
	doc        TEXT COLLATE "C" NOT NULL
);

CREATE TABLE access_requests (
	id         TEXT COLLATE "C" PRIMARY KEY,
	created_at TEXT COLLATE "C" NOT NULL,
	doc        TEXT COLLATE "C" NOT NULL
);
CREATE INDEX access_requests_by_time ON access_requests (created_at, id);
