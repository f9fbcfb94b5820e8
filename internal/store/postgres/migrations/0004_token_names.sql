-- Schema version 4: a join token's name may be given again once no live agent or unused token holds it,
-- so that a node re-joins under the same agent SPIFFE ID. The name was UNIQUE; the store checks instead.
ALTER TABLE join_tokens DROP CONSTRAINT join_tokens_name_key;
CREATE INDEX join_tokens_by_name ON join_tokens (name);
