-- Retries as rows of their own: a failed attempt with retries left is retried once its row is
-- due; `taken` when the retry started it. Until now a retry was a delay row (association
-- `-(step + 1)`, sequence `SEQUENCE || char(31) || N`): those rows are moved here. `step` is
-- the step's position in the flow's definition order, as a delay's `assoc` is the
-- association's (a delay row does not name its step, so a moved row could not either);
-- `number` counts the task's retries in its recovery, 1 for the first.
CREATE TABLE retries (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    recovery INTEGER NOT NULL,
    step INTEGER NOT NULL,
    sequence TEXT NOT NULL,
    number INTEGER NOT NULL,
    due_at BIGINT NOT NULL,
    taken BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    UNIQUE (run_id, recovery, step, sequence, number),
    FOREIGN KEY (run_id, recovery) REFERENCES runs (run_id, recovery)
);

INSERT INTO retries (run_id, recovery, step, sequence, number, due_at, taken, created_at)
SELECT run_id, recovery, -assoc - 1,
       substr(sequence, 1, instr(sequence, char(31)) - 1),
       CAST(substr(sequence, instr(sequence, char(31)) + 1) AS INTEGER),
       due_at, fired, created_at
FROM delays
WHERE assoc < 0 AND instr(sequence, char(31)) > 0
ORDER BY id;

DELETE FROM delays WHERE assoc < 0 AND instr(sequence, char(31)) > 0;
