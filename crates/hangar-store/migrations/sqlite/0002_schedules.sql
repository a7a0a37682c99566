-- Scheduled agents, and the schedule each scheduled run came from.
--
-- `last_slot` is the slot floor: the latest cron slot (Unix ms) that was
-- claimed, or the time before which no slot may fire (creation, resume, a
-- change of the cron expression). A slot fires only through the conditional
-- update `last_slot < slot`, in the transaction that creates its run, so one
-- slot creates at most one run however many schedulers race for it.

CREATE TABLE schedules (
    id                TEXT    PRIMARY KEY,
    team_id           INTEGER NOT NULL REFERENCES teams(id),
    name              TEXT    NOT NULL,
    cron_schedule     TEXT    NOT NULL,
    timezone          TEXT,
    enabled           INTEGER NOT NULL,
    prompt            TEXT    NOT NULL,
    config            TEXT,
    created_by        INTEGER REFERENCES users(id),
    updated_by        INTEGER REFERENCES users(id),
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    last_slot         INTEGER NOT NULL,
    last_ran          INTEGER,
    next_run          INTEGER,
    last_spawn_error  TEXT
);
CREATE INDEX schedules_team_name ON schedules (team_id, name, id);
CREATE INDEX schedules_due ON schedules (next_run) WHERE enabled = 1 AND next_run IS NOT NULL;

ALTER TABLE runs ADD COLUMN schedule_id TEXT;
ALTER TABLE runs ADD COLUMN schedule_name TEXT;
ALTER TABLE runs ADD COLUMN schedule_cron TEXT;
CREATE INDEX runs_team_schedule ON runs (team_id, schedule_id, updated_at DESC, id DESC)
    WHERE schedule_id IS NOT NULL;
