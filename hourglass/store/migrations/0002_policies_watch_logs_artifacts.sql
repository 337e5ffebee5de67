-- 0002: overlap and catch-up policies, pausing, revisions, skipped and cancelled runs, run
-- output, uploaded binaries, and change notifications for WatchJob.

CREATE TABLE artifacts (
    digest     text PRIMARY KEY CHECK (digest ~ '^sha256:[0-9a-f]{64}$'),
    size       bigint NOT NULL CHECK (size >= 0),
    created_at timestamptz NOT NULL
);

ALTER TABLE jobs
    DROP CONSTRAINT jobs_state_check,
    ADD CONSTRAINT jobs_state_check
        CHECK (state IN ('active', 'paused', 'completed', 'cancelled')),
    -- A job's binary cannot be deleted while the job refers to it.
    ADD COLUMN binary_digest text REFERENCES artifacts (digest) ON DELETE RESTRICT,
    ADD COLUMN overlap text NOT NULL DEFAULT 'allow'
        CHECK (overlap IN ('allow', 'skip', 'buffer_one', 'replace')),
    ADD COLUMN catch_up text NOT NULL DEFAULT 'all'
        CHECK (catch_up IN ('all', 'latest', 'skip')),
    ADD COLUMN catch_up_window interval,
    -- Fires the catch-up policy dropped: visible, never silent.
    ADD COLUMN missed_fires bigint NOT NULL DEFAULT 0,
    ADD COLUMN revision integer NOT NULL DEFAULT 1;

-- Every spec a job has had; UpdateJob adds one.
CREATE TABLE job_revisions (
    job_id     uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    revision   integer NOT NULL,
    spec       jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (job_id, revision)
);

ALTER TABLE runs
    DROP CONSTRAINT runs_state_check,
    ADD CONSTRAINT runs_state_check
        CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled',
                         'skipped')),
    ADD COLUMN trigger text NOT NULL DEFAULT 'schedule'
        CHECK (trigger IN ('schedule', 'manual', 'backfill')),
    -- Why the run was skipped or cancelled.
    ADD COLUMN reason text NOT NULL DEFAULT '',
    -- Set by CancelRun (or a replacing fire) while running; the holder terminates it.
    ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false,
    -- Maintained by a trigger from the database's clock, for WatchJob's "changed since".
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT clock_timestamp();

-- Active runs of a job, for the overlap policies.
CREATE INDEX runs_active ON runs (job_id) WHERE state IN ('queued', 'running');
-- Retention pruning walks finished runs oldest first.
CREATE INDEX runs_finished_at ON runs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX runs_job_updated ON runs (job_id, updated_at);

-- Output of attempts, in order, while they run and after. Capped per attempt by the writer.
CREATE TABLE run_logs (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id     uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    attempt    integer NOT NULL,
    stream     smallint NOT NULL CHECK (stream IN (1, 2)),
    data       bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX run_logs_run ON run_logs (run_id, seq);

CREATE FUNCTION hourglass_touch_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END
$$;

CREATE TRIGGER runs_touch BEFORE UPDATE ON runs
    FOR EACH ROW EXECUTE FUNCTION hourglass_touch_run();

-- One NOTIFY per statement, not per row: the ids of the jobs whose rows changed, in chunks
-- that fit a notification's payload.
CREATE FUNCTION hourglass_notify_changes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids text;
BEGIN
    FOR ids IN
        SELECT string_agg(id, ',')
        FROM (SELECT id, (row_number() OVER (ORDER BY id) - 1) / 200 AS chunk
              FROM (SELECT DISTINCT job_id::text AS id FROM changed) AS distinct_ids) AS numbered
        GROUP BY chunk
    LOOP
        PERFORM pg_notify('hourglass_events', ids);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE FUNCTION hourglass_notify_job_changes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids text;
BEGIN
    FOR ids IN
        SELECT string_agg(id, ',')
        FROM (SELECT id::text AS id, (row_number() OVER (ORDER BY id) - 1) / 200 AS chunk
              FROM changed) AS numbered
        GROUP BY chunk
    LOOP
        PERFORM pg_notify('hourglass_events', ids);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_inserted AFTER INSERT ON runs REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION hourglass_notify_changes();
CREATE TRIGGER runs_updated AFTER UPDATE ON runs REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION hourglass_notify_changes();
CREATE TRIGGER jobs_updated AFTER UPDATE ON jobs REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION hourglass_notify_job_changes();
