-- LLM gateway usage of callers without a run: API keys (`key:<id>`) and
-- dashboard sessions (`user:<id>`). A run's usage stays on `runs`.
CREATE TABLE llm_caller_usage (
    team_id           BIGINT           NOT NULL REFERENCES teams(id),
    subject           TEXT COLLATE "C" NOT NULL,
    requests          BIGINT           NOT NULL DEFAULT 0,
    prompt_tokens     BIGINT           NOT NULL DEFAULT 0,
    completion_tokens BIGINT           NOT NULL DEFAULT 0,
    cost_usd          DOUBLE PRECISION NOT NULL DEFAULT 0,
    updated_at        BIGINT           NOT NULL,
    PRIMARY KEY (team_id, subject)
);
