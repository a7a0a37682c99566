-- Execution leases: the connection holding a live execution and when its
-- lease expires unless that worker's heartbeats renew it (ms). Any replica
-- ends or re-queues an execution whose lease expired. Unmanaged executions
-- have no lease (NULL) and are never swept.
ALTER TABLE executions ADD COLUMN lease_holder TEXT;
ALTER TABLE executions ADD COLUMN lease_expires_at BIGINT;
CREATE INDEX executions_lease ON executions (lease_expires_at) WHERE ended_at IS NULL;
-- Live executions of an older server get one minute for their worker to renew.
UPDATE executions
   SET lease_expires_at = (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT + 60000
 WHERE ended_at IS NULL AND worker_id <> 'local:unmanaged';
