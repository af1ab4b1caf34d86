ALTER TABLE runs DROP COLUMN env_from_prime;
ALTER TABLE runs DROP COLUMN params;
