-- Retries back into delay rows of their own (association `-(step + 1)`, sequence
-- `SEQUENCE || chr(31) || N`).
INSERT INTO delays (run_id, recovery, assoc, sequence, due_at, fired, created_at)
SELECT run_id, recovery, -step - 1, sequence || chr(31) || number, due_at, taken, created_at
FROM retries
ORDER BY id;

DROP TABLE retries;
