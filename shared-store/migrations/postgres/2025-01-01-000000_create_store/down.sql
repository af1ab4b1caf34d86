-- Undoes the eventor store schema (children before the runs they reference).
DROP TABLE batches;
DROP TABLE delays;
DROP TABLE tasks;
DROP TABLE triggers;
DROP TABLE runs;
