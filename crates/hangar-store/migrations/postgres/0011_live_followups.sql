-- Follow-ups to a live execution, stored before they are acknowledged and
-- delivered to its agent exactly once, through whichever replica the agent
-- is connected to. Rows with `execution_id` NULL reopened an ended run.
ALTER TABLE run_followups ADD COLUMN execution_id TEXT COLLATE "C";
ALTER TABLE run_followups ADD COLUMN delivered_at BIGINT;

CREATE INDEX run_followups_pending ON run_followups (execution_id, id)
    WHERE delivered_at IS NULL;

-- The replica holding the agent's session socket delivers it.
CREATE FUNCTION hangar_followups_signal() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.execution_id IS NOT NULL THEN
        PERFORM hangar_signal('hangar_followup', NEW.run_id, NEW.execution_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER followups_signal AFTER INSERT ON run_followups
    FOR EACH ROW EXECUTE FUNCTION hangar_followups_signal();
