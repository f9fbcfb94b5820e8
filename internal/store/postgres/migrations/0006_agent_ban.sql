-- Schema version 6: an agent may be banned: evicted and refused attestation until it is unbanned.
ALTER TABLE agents ADD COLUMN banned BOOLEAN NOT NULL DEFAULT false;
