-- Grants on a run's session: to the team, to one user, or a public link
-- (stored by the SHA-256 of its token only).

CREATE TABLE run_shares (
    id           TEXT    PRIMARY KEY,
    team_id      INTEGER NOT NULL REFERENCES teams(id),
    run_id       TEXT    NOT NULL REFERENCES runs(id),
    grantee      TEXT    NOT NULL,  -- team | user | public
    user_id      INTEGER REFERENCES users(id),
    -- `team`, `user:<id>` or `public:<share id>`: one team grant and one grant
    -- per user per run, any number of public links.
    grantee_key  TEXT    NOT NULL,
    role         TEXT    NOT NULL,  -- view | edit
    token_hash   BLOB    UNIQUE,
    created_by   INTEGER REFERENCES users(id),
    created_at   INTEGER NOT NULL,
    UNIQUE (run_id, grantee_key)
);
