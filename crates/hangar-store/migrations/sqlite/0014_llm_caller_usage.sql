-- LLM gateway usage of callers without a run: API keys (`key:<id>`) and
-- dashboard sessions (`user:<id>`). A run's usage stays on `runs`.
CREATE TABLE llm_caller_usage (
    team_id           INTEGER NOT NULL REFERENCES teams(id),
    subject           TEXT    NOT NULL,
    requests          INTEGER NOT NULL DEFAULT 0,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd          REAL    NOT NULL DEFAULT 0,
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (team_id, subject)
);
