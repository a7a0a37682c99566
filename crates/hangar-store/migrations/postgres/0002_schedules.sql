-- Scheduled agents, and the schedule each scheduled run came from.
--
-- `last_slot` is the slot floor: the latest cron slot (Unix ms) that was
-- claimed, or the time before which no slot may fire (creation, resume, a
-- change of the cron expression). A slot fires only through the conditional
-- update `last_slot < slot`, in the transaction that creates its run, so one
-- slot creates at most one run however many replicas race for it (PostgreSQL
-- re-checks the WHERE after waiting for a concurrent writer of the row).

CREATE TABLE schedules (
    id                TEXT COLLATE "C" PRIMARY KEY,
    team_id           BIGINT  NOT NULL REFERENCES teams(id),
    name              TEXT    NOT NULL,
    cron_schedule     TEXT    NOT NULL,
    timezone          TEXT,
    enabled           BOOLEAN NOT NULL,
    prompt            TEXT    NOT NULL,
    config            TEXT,
    created_by        BIGINT  REFERENCES users(id),
    updated_by        BIGINT  REFERENCES users(id),
    created_at        BIGINT  NOT NULL,
    updated_at        BIGINT  NOT NULL,
    last_slot         BIGINT  NOT NULL,
    last_ran          BIGINT,
    next_run          BIGINT,
    last_spawn_error  TEXT
);
CREATE INDEX schedules_team_name ON schedules (team_id, name, id);
CREATE INDEX schedules_due ON schedules (next_run) WHERE enabled AND next_run IS NOT NULL;

ALTER TABLE runs ADD COLUMN schedule_id TEXT COLLATE "C";
ALTER TABLE runs ADD COLUMN schedule_name TEXT;
ALTER TABLE runs ADD COLUMN schedule_cron TEXT;
CREATE INDEX runs_team_schedule ON runs (team_id, schedule_id, updated_at DESC, id DESC)
    WHERE schedule_id IS NOT NULL;
