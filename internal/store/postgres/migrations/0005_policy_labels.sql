-- Schema version 5: the identity labels of the policy repository's data file, so that a restarted server
-- applies them again without a new commit. Replaced as a whole by every commit the server applies.
CREATE TABLE policy_labels (
	spiffe_id TEXT COLLATE "C" PRIMARY KEY,
	labels    TEXT COLLATE "C" NOT NULL -- JSON object: label name → value
);
