-- Back to row tables with a unique index. Ids count per run since the migration, so they
-- cannot stay row ids (unique in the table): rows are numbered anew, each run's in its order.

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

INSERT INTO rowid_triggers (run_id, recovery, event, sequence, created_at)
    SELECT run_id, recovery, event, sequence, created_at FROM triggers
    ORDER BY run_id, recovery, id;
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

INSERT INTO rowid_tasks (run_id, recovery, step, sequence, status, attempt, host, pid,
        result, error, created_at, updated_at, failure_class)
    SELECT run_id, recovery, step, sequence, status, attempt, host, pid, result, error,
        created_at, updated_at, failure_class FROM tasks
    ORDER BY run_id, recovery, id;
DROP TABLE tasks;
ALTER TABLE rowid_tasks RENAME TO tasks;
