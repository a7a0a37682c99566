-- Local accounts for the dashboard: argon2id password hashes, a disabled
-- flag, soft deletion (runs and keys keep pointing at the user), unique
-- case-insensitive emails, and web sessions (only the SHA-256 of the cookie
-- token is stored).
ALTER TABLE users ADD COLUMN password_hash TEXT;
ALTER TABLE users ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN deleted_at BIGINT;

CREATE UNIQUE INDEX users_email_ci ON users (lower(email)) WHERE email IS NOT NULL;

CREATE TABLE web_sessions (
    token_hash  BYTEA  PRIMARY KEY,
    team_id     BIGINT NOT NULL REFERENCES teams(id),
    user_id     BIGINT NOT NULL REFERENCES users(id),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);
