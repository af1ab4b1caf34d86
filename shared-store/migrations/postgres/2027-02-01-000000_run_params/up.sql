-- A run's parameters (`--param`, the flow's `params:`) as a JSON object of name to value, and
-- the names (never the values) of the variables its tasks get from the prime's environment
-- (`env_from_prime`) as a JSON array. Both null for a run stored before this migration.
ALTER TABLE runs ADD COLUMN params TEXT;
ALTER TABLE runs ADD COLUMN env_from_prime TEXT;
