-- 0007: a quota on the runs a namespace may have running at once, honoured by the fair claim,
-- so that an administrator can keep slots free for the other namespaces. Namespaces with
-- their own quotas get the default (hourglass.policies.DEFAULT_MAX_RUNNING_RUNS).
ALTER TABLE namespace_quotas
    ADD COLUMN max_running_runs bigint NOT NULL DEFAULT 100000 CHECK (max_running_runs >= 0);
ALTER TABLE namespace_quotas ALTER COLUMN max_running_runs DROP DEFAULT;
