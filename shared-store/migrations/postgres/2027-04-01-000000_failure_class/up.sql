-- Failures by kind: the class of a task's failed end (`exit:3`, `signal:SIGKILL`, `timeout`,
-- `host_lost`, `start`, `store`, `interrupted`), written with its end; NULL for a success, a
-- task that has not ended, and every task stored before this column.
ALTER TABLE tasks ADD COLUMN failure_class TEXT;
