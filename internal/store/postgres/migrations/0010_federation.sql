-- Schema version 10 (issue 19; the port of SQLite's 0012_federation.sql): federation with other trust
-- domains.
--
-- federated_bundles: the bundles of other trust domains this server trusts, set by hand (kith bundle set) or
-- refreshed from a federation relationship's bundle endpoint. bundle is the SPIFFE bundle JSON.
CREATE TABLE federated_bundles (
	trust_domain TEXT COLLATE "C" PRIMARY KEY,
	bundle       TEXT COLLATE "C" NOT NULL,
	source       TEXT COLLATE "C" NOT NULL,  -- 'manual' or 'federation'
	sequence     BIGINT NOT NULL DEFAULT 0,  -- the bundle's spiffe_sequence, as it came
	updated_at   TEXT COLLATE "C",
	revision     BIGINT NOT NULL
);

-- federations: the relationships whose bundle endpoints the server polls. The refresh status (last_refresh,
-- next_refresh, last_error) is written without a revision or audit row, like agent policy reports.
CREATE TABLE federations (
	trust_domain        TEXT COLLATE "C" PRIMARY KEY,
	bundle_endpoint_url TEXT COLLATE "C" NOT NULL,
	profile             TEXT COLLATE "C" NOT NULL,          -- 'https_spiffe' or 'https_web'
	endpoint_spiffe_id  TEXT COLLATE "C" NOT NULL DEFAULT '',
	created_at          TEXT COLLATE "C",
	updated_at          TEXT COLLATE "C",
	revision            BIGINT NOT NULL,
	last_refresh        TEXT COLLATE "C",
	next_refresh        TEXT COLLATE "C",
	last_error          TEXT COLLATE "C" NOT NULL DEFAULT ''
);

-- The trust domains whose bundles an entry's workloads also receive (JSON array of names).
ALTER TABLE entries ADD COLUMN federates_with TEXT COLLATE "C" NOT NULL DEFAULT '[]';
