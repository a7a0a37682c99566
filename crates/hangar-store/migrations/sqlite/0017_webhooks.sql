-- Outbound webhooks: a team's subscriptions to run lifecycle events, and
-- their deliveries as an outbox. A subscription's `event_cursor` is the last
-- lifecycle sequence of its team already turned into deliveries; a delivery
-- is `pending` until the receiver answers 2xx (`delivered`) or its retry
-- window ends (`failed`). Both are in the database, so a restart loses
-- nothing. The signing secret is sealed by the server.
CREATE TABLE webhooks (
    id                TEXT PRIMARY KEY,
    team_id           INTEGER NOT NULL REFERENCES teams(id),
    url               TEXT NOT NULL,
    event_types       TEXT NOT NULL,
    secret_nonce      BLOB NOT NULL,
    secret_ciphertext BLOB NOT NULL,
    event_cursor      INTEGER NOT NULL,
    created_by        INTEGER REFERENCES users(id),
    created_at        INTEGER NOT NULL
);
CREATE INDEX webhooks_team ON webhooks (team_id, created_at);

CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    webhook_id      TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    team_id         INTEGER NOT NULL,
    event_type      TEXT NOT NULL,
    sequence        INTEGER NOT NULL,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    next_attempt_at INTEGER NOT NULL,
    retry_until     INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (webhook_id, sequence)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (webhook_id, created_at);
