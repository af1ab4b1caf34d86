-- Tasks and triggers stored in their unique keys' order (WITHOUT ROWID): one B-tree each
-- instead of a row table plus an index. A chain step writes one task's end, the next
-- task and its trigger; keyed this way that commit dirties about half the pages.
-- `id` stays, for creation and firing order, but is no longer SQLite's row id: the store
-- hands it out (sqlite/ids.rs). Rows keep the ids they had.

CREATE TABLE keyed_triggers (
    id BIGINT NOT NULL,
    run_id TEXT NOT NULL,
    recovery INTEGER NOT NULL,
    event TEXT NOT NULL,
    sequence TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, recovery, event, sequence),
    FOREIGN KEY (run_id, recovery) REFERENCES runs (run_id, recovery)
) WITHOUT ROWID;

INSERT INTO keyed_triggers (id, run_id, recovery, event, sequence, created_at)
    SELECT id, run_id, recovery, event, sequence, created_at FROM triggers;
DROP TABLE triggers;
ALTER TABLE keyed_triggers RENAME TO triggers;

CREATE TABLE keyed_tasks (
    id BIGINT NOT NULL,
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
    PRIMARY KEY (run_id, recovery, step, sequence),
    FOREIGN KEY (run_id, recovery) REFERENCES runs (run_id, recovery)
) WITHOUT ROWID;

INSERT INTO keyed_tasks (id, run_id, recovery, step, sequence, status, attempt, host, pid,
        result, error, created_at, updated_at, failure_class)
    SELECT id, run_id, recovery, step, sequence, status, attempt, host, pid, result, error,
        created_at, updated_at, failure_class FROM tasks;
DROP TABLE tasks;
ALTER TABLE keyed_tasks RENAME TO tasks;
