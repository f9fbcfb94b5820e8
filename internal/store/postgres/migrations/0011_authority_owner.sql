-- Schema version 11 (issue 17; the port of SQLite's 0013_authority_owner.sql): one intermediate per server
-- when several servers share the store.
--
-- authorities.owner: the name of the server that signs with an intermediate; empty for roots, JWT keys and
-- the intermediates of a server alone.
ALTER TABLE authorities ADD COLUMN owner TEXT COLLATE "C" NOT NULL DEFAULT '';
