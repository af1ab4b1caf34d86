-- Why a run could not do its work (a store or host it could not reach, a login refused), as
-- its coordinator saw it; null for a run that ended on its own, and for rows before this.
ALTER TABLE runs ADD COLUMN cause TEXT;
