-- The eventor store: runs, triggers, tasks and delays (SQLite).
-- The unique keys are the store's invariants; they lead with (run_id, recovery) so the same
-- index also serves the per-run listings and the fenced task updates.

CREATE TABLE runs (
    run_id TEXT NOT NULL,
    recovery INTEGER NOT NULL,
    name TEXT NOT NULL,
    mode TEXT NOT NULL,
    status TEXT NOT NULL,
    host TEXT NOT NULL,
    program TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    PRIMARY KEY (run_id, recovery)
);

-- latest_run(name): newest started_at, then highest recovery.
CREATE INDEX runs_by_name ON runs (name, started_at, recovery);

CREATE TABLE triggers (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    recovery INTEGER NOT NULL,
    event TEXT NOT NULL,
    sequence TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (run_id, recovery, event, sequence),
    FOREIGN KEY (run_id, recovery) REFERENCES runs (run_id, recovery)
);

CREATE TABLE tasks (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    recovery INTEGER NOT NULL,
    step TEXT NOT NULL,
    sequence TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    host TEXT,
    pid BIGINT,
    result TEXT,
    error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (run_id, recovery, step, sequence),
    FOREIGN KEY (run_id, recovery) REFERENCES runs (run_id, recovery)
);

CREATE TABLE delays (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    recovery INTEGER NOT NULL,
    assoc INTEGER NOT NULL,
    sequence TEXT NOT NULL,
    due_at BIGINT NOT NULL,
    fired BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    UNIQUE (run_id, recovery, assoc, sequence),
    FOREIGN KEY (run_id, recovery) REFERENCES runs (run_id, recovery)
);
