-- 0005: fair use. Each namespace may have its own quotas (jobs, queued runs, fires per
-- second; without a row it gets the defaults in hourglass.policies); the producer paces each
-- namespace's fires; runs carry their job's namespace so that workers claim fairly across
-- namespaces (the one running the fewest runs first, each one's oldest run first), from
-- indexes on (namespace, ...) of queued and of running runs.
CREATE TABLE namespace_quotas (
    namespace            text PRIMARY KEY,
    max_jobs             bigint NOT NULL CHECK (max_jobs >= 0),
    max_queued_runs      bigint NOT NULL CHECK (max_queued_runs >= 0),
    max_fires_per_second double precision NOT NULL CHECK (max_fires_per_second > 0),
    updated_at           timestamptz NOT NULL
);

CREATE TABLE namespace_pacing (
    namespace text PRIMARY KEY,
    tat       timestamptz NOT NULL
);

ALTER TABLE runs ADD COLUMN namespace text;
UPDATE runs SET namespace = jobs.namespace FROM jobs WHERE jobs.id = runs.job_id;
ALTER TABLE runs ALTER COLUMN namespace SET NOT NULL;

DROP INDEX runs_queued;
CREATE INDEX runs_queued ON runs (namespace, available_at) WHERE state = 'queued';
DROP INDEX runs_running;
CREATE INDEX runs_running ON runs (namespace, id) WHERE state = 'running';
