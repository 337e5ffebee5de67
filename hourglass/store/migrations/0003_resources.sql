-- 0003: compute resources of a job's Kubernetes container.
ALTER TABLE jobs ADD COLUMN resources jsonb NOT NULL DEFAULT '{}';
