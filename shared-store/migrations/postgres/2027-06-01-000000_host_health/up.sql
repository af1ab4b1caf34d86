-- Each host's health in a run as its prime last saw it, for `eventor-coord hosts` and
-- `status`: `state` is 'up', 'away' or 'quarantined' (until `until_at`, microseconds since
-- the epoch), `reason` why it is not up, and `failures` its last host-class failures, one a
-- line (microseconds, a tab, the reason). Written by the prime whenever a host's state
-- changes, and only while the run's row is there.
CREATE TABLE host_health (
    run_id TEXT NOT NULL,
    recovery INTEGER NOT NULL,
    host TEXT NOT NULL,
    state TEXT NOT NULL,
    until_at BIGINT,
    reason TEXT,
    failures TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, recovery, host),
    FOREIGN KEY (run_id, recovery) REFERENCES runs (run_id, recovery)
);
