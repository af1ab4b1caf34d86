ALTER TABLE tasks DROP COLUMN failure_class;
