-- Requests to a running coordinator from elsewhere (`eventor-coord cancel`): a row of the
-- run's recovery that its coordinator picks up (Postgres notifies it, SQLite is watched).
-- `kind` is what is asked ('cancel'); `requested_by` who asked, as people read it
-- (`eventor-coord cancel (user@host)`).
CREATE TABLE run_requests (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    recovery INTEGER NOT NULL,
    kind TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    FOREIGN KEY (run_id, recovery) REFERENCES runs (run_id, recovery)
);

CREATE INDEX run_requests_of_run ON run_requests (run_id, recovery, id);
