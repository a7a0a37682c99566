-- Environments, encrypted secrets, and the environment snapshot of each run.

CREATE TABLE environments (
    id          TEXT    PRIMARY KEY,
    team_id     INTEGER NOT NULL REFERENCES teams(id),
    name        TEXT    NOT NULL,
    spec        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (team_id, name)
);

CREATE TABLE secrets (
    team_id     INTEGER NOT NULL REFERENCES teams(id),
    name        TEXT    NOT NULL,
    nonce       BLOB    NOT NULL,
    ciphertext  BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (team_id, name)
);

CREATE TABLE run_environments (
    run_id  TEXT PRIMARY KEY REFERENCES runs(id),
    spec    TEXT NOT NULL
);
