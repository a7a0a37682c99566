-- Listing a team's runs filtered by state, sorted by creation (the sort by
-- update has had its index since 0001). Numbered as on SQLite, whose 0004
-- creates both.
CREATE INDEX IF NOT EXISTS runs_team_state_created ON runs (team_id, state, created_at DESC, id DESC);
