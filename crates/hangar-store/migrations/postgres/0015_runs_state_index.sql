-- Runs by state for metrics (hangar_server_runs): counted from the index alone.
CREATE INDEX runs_state ON runs (state);
