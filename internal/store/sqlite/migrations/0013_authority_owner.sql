-- Schema version 13 (issue 17): one intermediate per server when several servers share a store.
--
-- authorities.owner: the name of the server that signs with an intermediate; empty for roots, JWT keys and
-- the intermediates of a server alone.
ALTER TABLE authorities ADD COLUMN owner TEXT NOT NULL DEFAULT '';
