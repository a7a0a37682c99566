-- One row that `/readyz` rewrites to prove the database can commit a write
-- (a full disk or a read-only database fails here before it fails a user's write).
CREATE TABLE store_probe (
    id BIGINT PRIMARY KEY,
    at BIGINT NOT NULL
);
