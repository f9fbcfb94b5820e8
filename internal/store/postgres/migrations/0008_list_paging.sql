-- Schema version 8: lists page by key (SPIFFE ID then ID for entries; target, caller, ID for grants), and
-- short names resolve by an index instead of a scan.

-- name is the last path segment of spiffe_id ("payments" for spiffe://td/ns/prod/sa/payments).
ALTER TABLE entries ADD COLUMN name TEXT COLLATE "C" NOT NULL DEFAULT '';
UPDATE entries SET name = regexp_replace(spiffe_id, '^.*/', '');
CREATE INDEX entries_by_name ON entries (name, spiffe_id, id);

DROP INDEX grants_by_target;
CREATE INDEX grants_by_target ON grants (target, caller, id);
