-- Follow-ups to a live execution, stored before they are acknowledged and
-- delivered to its agent exactly once, through whichever replica the agent
-- is connected to. Rows with `execution_id` NULL reopened an ended run.
ALTER TABLE run_followups ADD COLUMN execution_id TEXT;
ALTER TABLE run_followups ADD COLUMN delivered_at INTEGER;

CREATE INDEX run_followups_pending ON run_followups (execution_id, id)
    WHERE delivered_at IS NULL;
