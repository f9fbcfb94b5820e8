-- Schema version 7: where an entry comes from. "cli" for the admin API;
-- "k8s:<resource>" for the Kubernetes controller, which alone may change or delete those.
ALTER TABLE entries ADD COLUMN source TEXT COLLATE "C" NOT NULL DEFAULT 'cli';
CREATE INDEX entries_source ON entries (source);
