-- 0009: jobs that the operator keeps in step with a ScheduledJob are marked with their
-- manager, so that the API refuses changes the operator would undo, and so that a lost job id
-- is found again by its manager instead of being scheduled twice.
ALTER TABLE jobs ADD COLUMN managed_by text NOT NULL DEFAULT '';
CREATE UNIQUE INDEX jobs_namespace_managed_by ON jobs (namespace, managed_by)
    WHERE managed_by <> '';
