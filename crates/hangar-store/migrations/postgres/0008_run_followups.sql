-- Follow-ups that reopened an ended run: the agent of the next execution
-- continues the conversation with the latest one.

CREATE TABLE run_followups (
    id          BIGSERIAL PRIMARY KEY,
    run_id      TEXT      COLLATE "C" NOT NULL REFERENCES runs(id),
    message     TEXT      NOT NULL,
    sender      TEXT      NOT NULL,
    created_at  BIGINT    NOT NULL
);

CREATE INDEX run_followups_by_run ON run_followups (run_id, id);
