-- SQLite's queue index gains the condition PostgreSQL's `runs_queued` has had
-- from the start (`current_execution_id IS NULL`): nothing to do here.
SELECT 1;
