-- Integrations: Slack, Linear, GitHub and generic webhooks that start runs.
-- `settings` is the JSON of `hangar_protocol::integration::IntegrationSettings`
-- (no credential in it); the provider's webhook signing secret is sealed by
-- the server (AES-256-GCM under its master key) like a team secret.
CREATE TABLE integrations (
    id                TEXT COLLATE "C" PRIMARY KEY,
    team_id           BIGINT NOT NULL REFERENCES teams(id),
    kind              TEXT   NOT NULL,
    name              TEXT   NOT NULL,
    settings          TEXT   NOT NULL,
    secret_nonce      BYTEA  NOT NULL,
    secret_ciphertext BYTEA  NOT NULL,
    created_by        BIGINT REFERENCES users(id),
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    UNIQUE (team_id, name)
);

-- Webhook deliveries an integration accepted, by the keys that identify a
-- delivery (the provider's delivery id, the signature): a replay, even
-- after a restart or on another replica, finds its key here and is refused.
CREATE TABLE integration_deliveries (
    integration_id TEXT COLLATE "C" NOT NULL REFERENCES integrations(id) ON DELETE CASCADE,
    delivery_key   TEXT   NOT NULL,
    received_at    BIGINT NOT NULL,
    PRIMARY KEY (integration_id, delivery_key)
);
CREATE INDEX integration_deliveries_received ON integration_deliveries (received_at);
