-- Grants on a run's session: to the team, to one user, or a public link
-- (stored by the SHA-256 of its token only).

CREATE TABLE run_shares (
    id           TEXT    PRIMARY KEY,
    team_id      BIGINT  NOT NULL REFERENCES teams(id),
    run_id       TEXT    NOT NULL REFERENCES runs(id),
    grantee      TEXT    NOT NULL,  -- team | user | public
    user_id      BIGINT  REFERENCES users(id),
    -- `team`, `user:<id>` or `public:<share id>`: one team grant and one grant
    -- per user per run, any number of public links.
    grantee_key  TEXT    NOT NULL,
    role         TEXT    NOT NULL,  -- view | edit
    token_hash   BYTEA   UNIQUE,
    created_by   BIGINT  REFERENCES users(id),
    created_at   BIGINT  NOT NULL,
    UNIQUE (run_id, grantee_key)
);

-- Every change of a run's grants tells the other replicas, whose open
-- session streams re-check their access (a revocation closes them within 2 s).
CREATE FUNCTION hangar_shares_signal() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM hangar_signal('hangar_shares', OLD.run_id, NULL);
    ELSE
        PERFORM hangar_signal('hangar_shares', NEW.run_id, NULL);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER run_shares_signal AFTER INSERT OR UPDATE OR DELETE ON run_shares
    FOR EACH ROW EXECUTE FUNCTION hangar_shares_signal();
