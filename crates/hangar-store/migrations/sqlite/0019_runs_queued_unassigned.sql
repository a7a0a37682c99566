-- The dispatcher's queue scan (`queued_runs`, and the queue depth gauge)
-- reads runs QUEUED and not yet assigned. The index held every QUEUED run,
-- assigned ones too, so with a backlog of runs assigned but not yet claimed
-- each scan read every one of them to skip it. PostgreSQL's index has had the
-- second condition from the start.
DROP INDEX runs_queued;
CREATE INDEX runs_queued ON runs (created_at, id)
    WHERE state = 'QUEUED' AND current_execution_id IS NULL;
