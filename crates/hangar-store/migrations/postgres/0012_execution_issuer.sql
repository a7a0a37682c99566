-- The API key that registered an unmanaged (local) run: its run token is
-- refused once that key expires or is revoked.
ALTER TABLE executions ADD COLUMN issuer_key_id TEXT COLLATE "C";
