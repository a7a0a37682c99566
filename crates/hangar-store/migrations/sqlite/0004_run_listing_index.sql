-- Listing a team's runs filtered by state: without these, a filter on a rare
-- (or absent) state walks every run of the team in sort order (≈160 ms over
-- 100,000 runs); with them it reads only the matching runs.
CREATE INDEX runs_team_state_updated ON runs (team_id, state, updated_at DESC, id DESC);
CREATE INDEX runs_team_state_created ON runs (team_id, state, created_at DESC, id DESC);
