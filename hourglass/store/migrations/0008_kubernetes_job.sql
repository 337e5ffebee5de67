-- 0008: how the Kubernetes executor shapes a job's Job (hourglass.v1.KubernetesJob): a batch/v1
-- job template, the namespace and the owning ScheduledJob. NULL: a Job built from the task.
ALTER TABLE jobs ADD COLUMN kubernetes jsonb;
