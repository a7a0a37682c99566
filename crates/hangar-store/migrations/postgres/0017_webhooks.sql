-- Outbound webhooks: a team's subscriptions to run lifecycle events, and
-- their deliveries as an outbox. A subscription's `event_cursor` is the last
-- lifecycle sequence of its team already turned into deliveries; a delivery
-- is `pending` until the receiver answers 2xx (`delivered`) or its retry
-- window ends (`failed`). Both are in the database, so a restart loses
-- nothing. The signing secret is sealed by the server.
CREATE TABLE webhooks (
    id                TEXT COLLATE "C" PRIMARY KEY,
    team_id           BIGINT NOT NULL REFERENCES teams(id),
    url               TEXT NOT NULL,
    event_types       TEXT NOT NULL,
    secret_nonce      BYTEA NOT NULL,
    secret_ciphertext BYTEA NOT NULL,
    event_cursor      BIGINT NOT NULL,
    created_by        BIGINT REFERENCES users(id),
    created_at        BIGINT NOT NULL
);
CREATE INDEX webhooks_team ON webhooks (team_id, created_at);

CREATE TABLE webhook_deliveries (
    id              TEXT COLLATE "C" PRIMARY KEY,
    webhook_id      TEXT COLLATE "C" NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    team_id         BIGINT NOT NULL,
    event_type      TEXT NOT NULL,
    sequence        BIGINT NOT NULL,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    last_status     BIGINT,
    last_error      TEXT,
    next_attempt_at BIGINT NOT NULL,
    retry_until     BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (webhook_id, sequence)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (webhook_id, created_at);
