-- Schema version 12 (issue 19): federation with other trust domains.
--
-- federated_bundles: the bundles of other trust domains this server trusts, set by hand (kith bundle set) or
-- refreshed from a federation relationship's bundle endpoint. bundle is the SPIFFE bundle JSON.
CREATE TABLE federated_bundles (
	trust_domain TEXT    PRIMARY KEY,
	bundle       TEXT    NOT NULL,
	source       TEXT    NOT NULL,          -- 'manual' or 'federation'
	sequence     INTEGER NOT NULL DEFAULT 0, -- the bundle's spiffe_sequence, as it came
	updated_at   TEXT,
	revision     INTEGER NOT NULL
);

-- federations: the relationships whose bundle endpoints the server polls. The refresh status (last_refresh,
-- next_refresh, last_error) is written without a revision or audit row, like agent policy reports.
CREATE TABLE federations (
	trust_domain        TEXT PRIMARY KEY,
	bundle_endpoint_url TEXT NOT NULL,
	profile             TEXT NOT NULL,          -- 'https_spiffe' or 'https_web'
	endpoint_spiffe_id  TEXT NOT NULL DEFAULT '',
	created_at          TEXT,
	updated_at          TEXT,
	revision            INTEGER NOT NULL,
	last_refresh        TEXT,
	next_refresh        TEXT,
	last_error          TEXT NOT NULL DEFAULT ''
);

-- The trust domains whose bundles an entry's workloads also receive (JSON array of names).
ALTER TABLE entries ADD COLUMN federates_with TEXT NOT NULL DEFAULT '[]';
