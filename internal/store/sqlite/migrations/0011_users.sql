-- Schema version 11 (issue 18): people. Users (spiffe://TD/user/<name>), their one-time enrolment codes
-- (only the SHA-256 of the secret), their logins (one per device; the serial of the certificate that may
-- renew next), and their access requests. Each row's full record is in doc (JSON); the columns are what
-- lookups and order use.
CREATE TABLE users (
	name       TEXT PRIMARY KEY,
	doc        TEXT NOT NULL,
	revision   INTEGER NOT NULL
);

CREATE TABLE enrolment_codes (
	id         TEXT PRIMARY KEY,
	hash       BLOB NOT NULL UNIQUE,
	user_name  TEXT NOT NULL,
	doc        TEXT NOT NULL
);

CREATE TABLE user_logins (
	id         TEXT PRIMARY KEY,
	user_name  TEXT NOT NULL,
	doc        TEXT NOT NULL
);

CREATE TABLE access_requests (
	id         TEXT PRIMARY KEY,
	created_at TEXT NOT NULL,
	doc        TEXT NOT NULL
);
CREATE INDEX access_requests_by_time ON access_requests (created_at, id);
