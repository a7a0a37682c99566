-- Worker tokens: credentials that can only connect a worker, bound to one
-- worker id or to a pool (an id prefix). Only the SHA-256 of the secret is
-- stored. Worker presence records which credential holds each connection
-- and when the worker was last heard on it, so another replica can refuse a
-- second connection unless it brings the same credential and the first one
-- has gone silent.
CREATE TABLE worker_tokens (
    id            TEXT    PRIMARY KEY,
    team_id       INTEGER NOT NULL REFERENCES teams(id),
    name          TEXT    NOT NULL,
    prefix        TEXT    NOT NULL,
    hash          BLOB    NOT NULL UNIQUE,
    worker_id     TEXT,
    pool          TEXT,
    created_by    INTEGER REFERENCES users(id),
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    revoked_at    INTEGER,
    last_used_at  INTEGER,
    CHECK ((worker_id IS NULL) <> (pool IS NULL))
);
CREATE INDEX worker_tokens_team ON worker_tokens (team_id, created_at);

ALTER TABLE worker_presence ADD COLUMN credential_id TEXT;
ALTER TABLE worker_presence ADD COLUMN heard_at INTEGER;
