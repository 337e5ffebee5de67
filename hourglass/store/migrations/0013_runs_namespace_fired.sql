-- 0013: a namespace's runs by fire time, newest first. ListRuns with a window and no job
-- (the console's Runs page: every job's runs of the last hour in one call) walks this index
-- backward from the window's end; a page ends the walk after its last row.
CREATE INDEX runs_namespace_fired ON runs (namespace, scheduled_at, id);
