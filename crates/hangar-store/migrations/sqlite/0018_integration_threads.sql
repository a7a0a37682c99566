-- The runs an integration started from a thread (a Slack thread, a Linear
-- issue, a GitHub issue or pull request) and where their replies go: a
-- mention in the same thread while the run is active becomes a follow-up,
-- and each change of the run's state is reported there once.
--
-- `reply_to` is the provider's address of the thread (JSON); `status_ref`
-- the provider's id of the status message that is edited as the run
-- progresses; `reported` the run state last reported (NULL: none yet);
-- `lease_until` fences the replica that is posting a reply.
CREATE TABLE integration_threads (
    run_id         TEXT    PRIMARY KEY,
    integration_id TEXT    NOT NULL REFERENCES integrations(id) ON DELETE CASCADE,
    team_id        INTEGER NOT NULL,
    thread_key     TEXT    NOT NULL,
    reply_to       TEXT    NOT NULL,
    status_ref     TEXT,
    reported       TEXT,
    lease_until    INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL
);
CREATE INDEX integration_threads_thread ON integration_threads (integration_id, thread_key, created_at);
-- The threads still to follow: those whose run has not been reported ended.
-- The reply loop reads these every pass, and all threads only now and then
-- (a run reopened from elsewhere than its thread).
CREATE INDEX integration_threads_open ON integration_threads (created_at)
    WHERE reported IS NULL OR reported NOT IN ('SUCCEEDED', 'FAILED', 'ERROR', 'CANCELLED');
