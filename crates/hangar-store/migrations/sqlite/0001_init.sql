-- Hangar schema v1 (SQLite). Times are Unix milliseconds (UTC).

CREATE TABLE teams (
    id          INTEGER PRIMARY KEY,
    uid         TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    uid           TEXT    NOT NULL UNIQUE,
    team_id       INTEGER NOT NULL REFERENCES teams(id),
    email         TEXT,
    display_name  TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT    PRIMARY KEY,
    team_id     INTEGER NOT NULL REFERENCES teams(id),
    user_id     INTEGER REFERENCES users(id),
    name        TEXT    NOT NULL,
    prefix      TEXT    NOT NULL,
    hash        BLOB    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);

CREATE TABLE runs (
    id                    TEXT    PRIMARY KEY,
    team_id               INTEGER NOT NULL REFERENCES teams(id),
    creator_user_id       INTEGER REFERENCES users(id),
    title                 TEXT    NOT NULL,
    prompt                TEXT    NOT NULL,
    state                 TEXT    NOT NULL,
    source                TEXT    NOT NULL,
    execution_location    TEXT    NOT NULL,
    worker_host           TEXT,
    config                TEXT    NOT NULL,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    started_at            INTEGER,
    status_message        TEXT,
    error_code            TEXT,
    current_execution_id  TEXT,
    sandbox_running       INTEGER NOT NULL DEFAULT 0,
    prompt_tokens         INTEGER NOT NULL DEFAULT 0,
    completion_tokens     INTEGER NOT NULL DEFAULT 0,
    inference_cost        REAL    NOT NULL DEFAULT 0
);
CREATE INDEX runs_team_updated ON runs (team_id, updated_at DESC, id DESC);
CREATE INDEX runs_team_created ON runs (team_id, created_at DESC, id DESC);
CREATE INDEX runs_queued ON runs (created_at) WHERE state = 'QUEUED';

CREATE TABLE executions (
    id              TEXT    PRIMARY KEY,
    run_id          TEXT    NOT NULL REFERENCES runs(id),
    worker_id       TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    token_hash      BLOB    NOT NULL UNIQUE,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    ended_at        INTEGER,
    exit_code       INTEGER,
    failure_reason  TEXT,
    message         TEXT
);
CREATE INDEX executions_run ON executions (run_id, created_at);
CREATE INDEX executions_live ON executions (worker_id) WHERE ended_at IS NULL;

CREATE TABLE run_events (
    run_id        TEXT    NOT NULL,
    execution_id  TEXT    NOT NULL,
    seq           INTEGER NOT NULL,
    at            INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    body          TEXT    NOT NULL,
    PRIMARY KEY (run_id, execution_id, seq)
) WITHOUT ROWID;
