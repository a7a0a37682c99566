-- Worker tokens: credentials that can only connect a worker, bound to one
-- worker id or to a pool (an id prefix). Only the SHA-256 of the secret is
-- stored. Worker presence records which credential holds each connection
-- and when the worker was last heard on it, so another replica can refuse a
-- second connection unless it brings the same credential and the first one
-- has gone silent.
CREATE TABLE worker_tokens (
    id            TEXT COLLATE "C" PRIMARY KEY,
    team_id       BIGINT NOT NULL REFERENCES teams(id),
    name          TEXT   NOT NULL,
    prefix        TEXT   NOT NULL,
    hash          BYTEA  NOT NULL UNIQUE,
    worker_id     TEXT COLLATE "C",
    pool          TEXT COLLATE "C",
    created_by    BIGINT REFERENCES users(id),
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    revoked_at    BIGINT,
    last_used_at  BIGINT,
    CHECK ((worker_id IS NULL) <> (pool IS NULL))
);
CREATE INDEX worker_tokens_team ON worker_tokens (team_id, created_at);

ALTER TABLE worker_presence ADD COLUMN credential_id TEXT COLLATE "C";
ALTER TABLE worker_presence ADD COLUMN heard_at BIGINT;
