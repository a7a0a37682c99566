-- Run lifecycle events (GET /agent/events) and the worker registry shared by replicas.

-- One row per run state change, numbered per team. A trigger on `runs` writes
-- them in the same transaction as the change. The per-team counter row is
-- locked by the increment until the transaction commits, so sequences of a
-- team are gap-free and commit in order: a poller's cursor never skips one.
CREATE TABLE lifecycle_events (
    team_id       BIGINT NOT NULL REFERENCES teams(id),
    sequence      BIGINT NOT NULL,
    run_id        TEXT   NOT NULL COLLATE "C",
    event_type    TEXT   NOT NULL,
    execution_id  TEXT,
    ref_id        TEXT,
    occurred_at   BIGINT NOT NULL,
    PRIMARY KEY (team_id, sequence)
);
CREATE INDEX lifecycle_events_run ON lifecycle_events (run_id, sequence);

CREATE TABLE lifecycle_counters (
    team_id        BIGINT PRIMARY KEY REFERENCES teams(id),
    last_sequence  BIGINT NOT NULL
);

CREATE FUNCTION hangar_next_lifecycle_sequence(team BIGINT) RETURNS BIGINT AS $$
    INSERT INTO lifecycle_counters AS c (team_id, last_sequence) VALUES (team, 1)
    ON CONFLICT (team_id) DO UPDATE SET last_sequence = c.last_sequence + 1
    RETURNING last_sequence;
$$ LANGUAGE sql;

CREATE FUNCTION hangar_record_run_lifecycle() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.state IS NOT DISTINCT FROM OLD.state THEN
        RETURN NULL;
    END IF;
    INSERT INTO lifecycle_events (team_id, sequence, run_id, event_type, execution_id, occurred_at)
    VALUES (
        NEW.team_id,
        hangar_next_lifecycle_sequence(NEW.team_id),
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
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER runs_lifecycle AFTER INSERT OR UPDATE OF state ON runs
FOR EACH ROW EXECUTE FUNCTION hangar_record_run_lifecycle();

-- Workers connected to any replica: upserted on connect and periodically by
-- the replica holding the connection, marked disconnected when it closes.
CREATE TABLE worker_presence (
    team_id        BIGINT  NOT NULL REFERENCES teams(id),
    worker_id      TEXT    NOT NULL COLLATE "C",
    replica_id     TEXT    NOT NULL,
    connection_id  TEXT    NOT NULL,
    backend        TEXT    NOT NULL,
    version        TEXT    NOT NULL,
    capacity       BIGINT  NOT NULL,
    running_tasks  BIGINT  NOT NULL,
    draining       BOOLEAN NOT NULL,
    labels         TEXT    NOT NULL,
    connected      BOOLEAN NOT NULL,
    connected_at   BIGINT  NOT NULL,
    last_seen      BIGINT  NOT NULL,
    PRIMARY KEY (team_id, worker_id)
);
CREATE INDEX worker_presence_seen ON worker_presence (last_seen);
