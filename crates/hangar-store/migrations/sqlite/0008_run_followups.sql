-- Follow-ups that reopened an ended run: the agent of the next execution
-- continues the conversation with the latest one.

CREATE TABLE run_followups (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT    NOT NULL REFERENCES runs(id),
    message     TEXT    NOT NULL,
    sender      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE INDEX run_followups_by_run ON run_followups (run_id, id);
