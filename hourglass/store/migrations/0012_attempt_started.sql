-- 0012: a worker claims runs ahead of its free slots; such a run holds its key and token but
-- has not started. `started` says whether its attempt began, so that the claimer hands a
-- never-started run back to the queue with its attempt number intact, instead of recording a
-- lost attempt (which would fail a max_attempts = 1 run that never ran).
ALTER TABLE attempts ADD COLUMN started boolean NOT NULL DEFAULT true;
