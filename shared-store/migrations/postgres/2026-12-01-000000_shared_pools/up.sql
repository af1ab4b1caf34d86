-- Resource pools shared by every run of the store: each pool's units as first declared, and
-- who holds units now. A grant belongs to one attempt of one task; it is taken in a
-- transaction that checks the pool's total (all of a task's pools, or none) and goes in the
-- same transaction as the task's end, or when a later recovery or continue of its run starts.
CREATE TABLE pools (
    name TEXT PRIMARY KEY,
    units INTEGER NOT NULL
);

CREATE TABLE grants (
    pool TEXT NOT NULL REFERENCES pools (name),
    run_id TEXT NOT NULL,
    recovery INTEGER NOT NULL,
    step TEXT NOT NULL,
    sequence TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    units INTEGER NOT NULL,
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, recovery, step, sequence, attempt, pool)
);

CREATE INDEX grants_by_pool ON grants (pool);
