-- Back to row tables with a unique index; ids are kept (SQLite's row ids again).

CREATE TABLE rowid_triggers (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    recovery INTEGER NOT NULL,
    event TEXT NOT NULL,
    sequence TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (run_id, recovery, event, sequence),
    FOREIGN KEY (run_id, recovery) REFERENCES runs (run_id, recovery)
);

INSERT INTO rowid_triggers (id, run_id, recovery, event, sequence, created_at)
    SELECT id, run_id, recovery, event, sequence, created_at FROM triggers;
DROP TABLE triggers;
ALTER TABLE rowid_triggers RENAME TO triggers;

CREATE TABLE rowid_tasks (
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
    failure_class TEXT,
    UNIQUE (run_id, recovery, step, sequence),
    FOREIGN KEY (run_id, recovery) REFERENCES runs (run_id, recovery)
);

INSERT INTO rowid_tasks (id, run_id, recovery, step, sequence, status, attempt, host, pid,
        result, error, created_at, updated_at, failure_class)
    SELECT id, run_id, recovery, step, sequence, status, attempt, host, pid, result, error,
        created_at, updated_at, failure_class FROM tasks;
DROP TABLE tasks;
ALTER TABLE rowid_tasks RENAME TO tasks;
