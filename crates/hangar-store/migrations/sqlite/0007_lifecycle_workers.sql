-- Run lifecycle events (GET /agent/events) and the worker registry shared by replicas.

-- One row per run state change, numbered per team. Triggers on `runs` write
-- them in the same transaction as the change, so every path that moves a run
-- (create, assign, claim, start, outcome, cancel, requeue, lost worker) is
-- recorded exactly once, and clients (POST /agent/events/{run_id}) add their own.
CREATE TABLE lifecycle_events (
    team_id       INTEGER NOT NULL REFERENCES teams(id),
    sequence      INTEGER NOT NULL,
    run_id        TEXT    NOT NULL,
    event_type    TEXT    NOT NULL,
    execution_id  TEXT,
    ref_id        TEXT,
    occurred_at   INTEGER NOT NULL,
    PRIMARY KEY (team_id, sequence)
);
CREATE INDEX lifecycle_events_run ON lifecycle_events (run_id, sequence);

CREATE TRIGGER runs_lifecycle_insert AFTER INSERT ON runs
BEGIN
    INSERT INTO lifecycle_events (team_id, sequence, run_id, event_type, execution_id, occurred_at)
    VALUES (
        NEW.team_id,
        (SELECT COALESCE(MAX(sequence), 0) + 1 FROM lifecycle_events WHERE team_id = NEW.team_id),
        NEW.id,
        CASE NEW.state
            WHEN 'QUEUED' THEN 'run_queued' WHEN 'PENDING' THEN 'run_pending'
            WHEN 'CLAIMED' THEN 'run_claimed' WHEN 'INPROGRESS' THEN 'run_in_progress'
            WHEN 'SUCCEEDED' THEN 'run_succeeded' WHEN 'FAILED' THEN 'run_failed'
            WHEN 'BLOCKED' THEN 'run_blocked' WHEN 'ERROR' THEN 'run_errored'
            WHEN 'CANCELLED' THEN 'run_cancelled' ELSE 'run_' || lower(NEW.state) END,
        NEW.current_execution_id,
        NEW.updated_at
    );
END;

CREATE TRIGGER runs_lifecycle_update AFTER UPDATE OF state ON runs
WHEN NEW.state IS NOT OLD.state
BEGIN
    INSERT INTO lifecycle_events (team_id, sequence, run_id, event_type, execution_id, occurred_at)
    VALUES (
        NEW.team_id,
        (SELECT COALESCE(MAX(sequence), 0) + 1 FROM lifecycle_events WHERE team_id = NEW.team_id),
        NEW.id,
        CASE NEW.state
            WHEN 'QUEUED' THEN 'run_queued' WHEN 'PENDING' THEN 'run_pending'
            WHEN 'CLAIMED' THEN 'run_claimed' WHEN 'INPROGRESS' THEN 'run_in_progress'
            WHEN 'SUCCEEDED' THEN 'run_succeeded' WHEN 'FAILED' THEN 'run_failed'
            WHEN 'BLOCKED' THEN 'run_blocked' WHEN 'ERROR' THEN 'run_errored'
            WHEN 'CANCELLED' THEN 'run_cancelled' ELSE 'run_' || lower(NEW.state) END,
        NEW.current_execution_id,
        NEW.updated_at
    );
END;

-- Workers connected to any replica: upserted on connect and periodically by
-- the replica holding the connection, marked disconnected when it closes.
CREATE TABLE worker_presence (
    team_id        INTEGER NOT NULL REFERENCES teams(id),
    worker_id      TEXT    NOT NULL,
    replica_id     TEXT    NOT NULL,
    connection_id  TEXT    NOT NULL,
    backend        TEXT    NOT NULL,
    version        TEXT    NOT NULL,
    capacity       INTEGER NOT NULL,
    running_tasks  INTEGER NOT NULL,
    draining       INTEGER NOT NULL,
    labels         TEXT    NOT NULL,
    connected      INTEGER NOT NULL,
    connected_at   INTEGER NOT NULL,
    last_seen      INTEGER NOT NULL,
    PRIMARY KEY (team_id, worker_id)
);
CREATE INDEX worker_presence_seen ON worker_presence (last_seen);
