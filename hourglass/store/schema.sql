-- The whole current schema of hourglass, the single source of truth. The numbered files in
-- migrations/ must produce exactly this (tests/integration/test_migrations.py checks it);
-- change both together. Columns are listed in the order the migrations leave them.

-- Uploaded binaries, content-addressed; the bytes live in the artifact store.
CREATE TABLE artifacts (
    digest     text PRIMARY KEY CHECK (digest ~ '^sha256:[0-9a-f]{64}$'),
    size       bigint NOT NULL CHECK (size >= 0),
    created_at timestamptz NOT NULL
);

-- One row per job. next_fire_at is the job's only schedule state: the producer advances it in
-- the same transaction that records the fire, so no fire is lost or doubled by a restart.
CREATE TABLE jobs (
    id              uuid PRIMARY KEY,
    name            text NOT NULL,
    -- Idempotency of ScheduleJob: the client's key (unique per namespace) and a digest of the
    -- request it came with.
    request_id      text,
    request_digest  bytea,
    command         text[] NOT NULL,
    args            text[] NOT NULL DEFAULT '{}',
    env             jsonb NOT NULL DEFAULT '{}',
    image           text NOT NULL DEFAULT '',
    working_dir     text NOT NULL DEFAULT '',
    -- Kind, parameters and start/end bounds (see hourglass.store.jobs.schedule_to_json).
    schedule        jsonb NOT NULL,
    max_attempts    integer NOT NULL DEFAULT 1 CHECK (max_attempts BETWEEN 1 AND 100),
    retry_backoff   interval NOT NULL DEFAULT '1 second',
    timeout         interval,
    state           text NOT NULL DEFAULT 'active'
                    CHECK (state IN ('active', 'paused', 'completed', 'cancelled')),
    next_fire_at    timestamptz,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    -- A job's binary cannot be deleted while the job refers to it.
    binary_digest   text REFERENCES artifacts (digest) ON DELETE RESTRICT,
    overlap         text NOT NULL DEFAULT 'allow'
                    CHECK (overlap IN ('allow', 'skip', 'buffer_one', 'replace')),
    catch_up        text NOT NULL DEFAULT 'all' CHECK (catch_up IN ('all', 'latest', 'skip')),
    catch_up_window interval,
    -- Fires the catch-up policy dropped: visible, never silent.
    missed_fires    bigint NOT NULL DEFAULT 0,
    revision        integer NOT NULL DEFAULT 1,
    -- Requests and limits of the Kubernetes container: cpu_request, memory_limit, ...
    resources       jsonb NOT NULL DEFAULT '{}',
    -- The tenant; an API token sees only its own namespace's jobs.
    namespace       text NOT NULL DEFAULT 'default',
    -- Environment given to the process but never returned, logged or kept in revisions.
    secret_env      jsonb NOT NULL DEFAULT '{}',
    -- The Kubernetes job template, namespace and owner (hourglass.v1.KubernetesJob); NULL: none.
    kubernetes      jsonb,
    -- Who keeps the job in step with a declaration ("ScheduledJob <ns>/<name>"); '' for none.
    managed_by      text NOT NULL DEFAULT '',
    CHECK (next_fire_at IS NULL OR state = 'active'),
    CONSTRAINT jobs_namespace_request_id_key UNIQUE (namespace, request_id)
);

-- The due-job query reads this index from its start. Only jobs that will fire again are in it,
-- so its cost depends on how many jobs are due, not on how many exist.
CREATE INDEX jobs_next_fire_at ON jobs (next_fire_at) WHERE next_fire_at IS NOT NULL;
-- ListJobs pages a namespace newest first.
CREATE INDEX jobs_namespace_created_at ON jobs (namespace, created_at DESC, id DESC);
-- One job per manager in a namespace: a ScheduleJob that names a manager adopts its job.
CREATE UNIQUE INDEX jobs_namespace_managed_by ON jobs (namespace, managed_by)
    WHERE managed_by <> '';

-- Every spec a job has had; UpdateJob adds one.
CREATE TABLE job_revisions (
    job_id     uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    revision   integer NOT NULL,
    spec       jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (job_id, revision)
);

-- One row per fire of a job: the queue and the history at once.
CREATE TABLE runs (
    id               uuid PRIMARY KEY,
    job_id           uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    scheduled_at     timestamptz NOT NULL,
    state            text NOT NULL
                     CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'timed_out',
                                      'cancelled', 'skipped')),
    -- The current attempt while queued or running; the last one once terminal.
    attempt          integer NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    -- A queued run may be claimed from this instant on (later than its fire time during a
    -- retry backoff or with jitter).
    available_at     timestamptz NOT NULL,
    -- The token of the attempt that holds the run while it is running.
    fencing_token    bigint,
    created_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    trigger          text NOT NULL DEFAULT 'schedule'
                     CHECK (trigger IN ('schedule', 'manual', 'backfill')),
    -- Why the run was skipped or cancelled.
    reason           text NOT NULL DEFAULT '',
    -- Set by CancelRun (or a replacing fire) while running; the holder terminates it.
    cancel_requested boolean NOT NULL DEFAULT false,
    -- Maintained by a trigger from the database's clock (the bench reads it).
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- A fire happens once: a second producer, or a retried transaction, cannot double it.
    UNIQUE (job_id, scheduled_at),
    -- The job's namespace, copied: workers claim fairly across namespaces from an index.
    namespace        text NOT NULL
);

-- Workers claim queued runs fairly: a skip scan finds the namespaces with queued runs, and
-- each namespace's oldest available runs come first (hourglass.store.runs.lock_queued).
CREATE INDEX runs_queued ON runs (namespace, available_at) WHERE state = 'queued';
-- The claimer sweeps the runs held right now; a claim counts each namespace's running runs.
CREATE INDEX runs_running ON runs (namespace, id) WHERE state = 'running';
-- Active runs of a job, for the overlap policies.
CREATE INDEX runs_active ON runs (job_id) WHERE state IN ('queued', 'running');
-- Retention pruning walks finished runs oldest first.
CREATE INDEX runs_finished_at ON runs (finished_at) WHERE finished_at IS NOT NULL;
-- ListRuns over a window of every job's runs (the console's Runs page), newest fire first.
CREATE INDEX runs_namespace_fired ON runs (namespace, scheduled_at, id);

-- One row per execution of a run. Every write of a running attempt is fenced by its token.
CREATE TABLE attempts (
    run_id        uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    number        integer NOT NULL CHECK (number >= 1),
    state         text NOT NULL
                  CHECK (state IN ('running', 'succeeded', 'failed', 'timed_out', 'cancelled',
                                   'lost')),
    worker_id     text NOT NULL,
    fencing_token bigint NOT NULL,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    exit_code     integer,
    stdout_tail   text NOT NULL DEFAULT '',
    stderr_tail   text NOT NULL DEFAULT '',
    error         text NOT NULL DEFAULT '',
    -- False while the attempt's run waits in its worker for a slot (claimed ahead): nothing has
    -- started, so a holder that goes away hands the run back (same attempt) instead of losing
    -- the attempt. Set, fenced by the token, just before the command starts (0012).
    started       boolean NOT NULL DEFAULT true,
    PRIMARY KEY (run_id, number)
);

-- API tokens, stored hashed; each belongs to one namespace.
CREATE TABLE api_tokens (
    id         uuid PRIMARY KEY,
    namespace  text NOT NULL,
    name       text NOT NULL DEFAULT '',
    -- sha256 of the token; the token itself is shown once, when it is created.
    token_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz,
    -- NULL: never expires.
    expires_at timestamptz
);

-- Artifact ownership (0006). The bytes are stored once per digest (artifacts); each namespace
-- that uploaded them owns them, may run them, and has them counted against its quota.
CREATE TABLE artifact_owners (
    namespace   text NOT NULL,
    digest      text NOT NULL REFERENCES artifacts (digest) ON DELETE RESTRICT,
    -- The last upload by this namespace: maintenance keeps an unused ownership this long.
    uploaded_at timestamptz NOT NULL,
    PRIMARY KEY (namespace, digest)
);
CREATE INDEX artifact_owners_digest ON artifact_owners (digest);
CREATE INDEX artifact_owners_uploaded_at ON artifact_owners (uploaded_at);

-- A job runs only a binary that its own namespace uploaded.
CREATE INDEX jobs_binary_digest ON jobs (binary_digest, namespace)
    WHERE binary_digest IS NOT NULL;
ALTER TABLE jobs ADD CONSTRAINT jobs_binary_owner FOREIGN KEY (namespace, binary_digest)
    REFERENCES artifact_owners (namespace, digest) ON DELETE RESTRICT;

-- The most bytes of artifacts a namespace may own; without a row, the API's default applies.
CREATE TABLE artifact_quotas (
    namespace text PRIMARY KEY,
    max_bytes bigint NOT NULL CHECK (max_bytes >= 0)
);

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

-- The run event log (0010). Every change of a run's state is appended by the statement that
-- makes it, so WatchJob delivers each change in order and a client resumes from a cursor.
CREATE TABLE run_events (
    -- Allocated while the statement holds the run's row lock: one run's events are in id order.
    id           bigint GENERATED ALWAYS AS IDENTITY,
    -- The writing transaction: a cursor is a snapshot, and an event is after it when this
    -- transaction is not visible in that snapshot (see hourglass.store.events).
    xid          xid8 NOT NULL DEFAULT pg_current_xact_id(),
    -- When it was written (database clock); maintenance prunes by age.
    at           timestamptz NOT NULL DEFAULT now(),
    -- The run as the change left it.
    job_id       uuid NOT NULL,
    run_id       uuid NOT NULL,
    state        text NOT NULL,
    attempt      integer NOT NULL,
    scheduled_at timestamptz NOT NULL,
    created_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    trigger      text NOT NULL,
    reason       text NOT NULL,
    PRIMARY KEY (xid, id)
);
-- WatchJob reads one job's events written by transactions at or above a snapshot's xmin.
CREATE INDEX run_events_job ON run_events (job_id, xid);

-- Events of transactions below this xid have been pruned: a cursor whose snapshot's xmin is
-- lower may have missed some, and is refused as expired. At most one row.
CREATE TABLE run_events_pruned (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    below     xid8 NOT NULL
);

-- One INSERT and one NOTIFY per statement, not per row: the new runs' events, then the ids
-- of their jobs, in chunks that fit a notification's payload. WatchJob listens on
-- hourglass_events and reads the events after its cursor.
CREATE FUNCTION hourglass_runs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    job_ids text[];
BEGIN
    WITH written AS (
        INSERT INTO run_events (job_id, run_id, state, attempt, scheduled_at, created_at,
                                finished_at, trigger, reason)
        SELECT job_id, id, state, attempt, scheduled_at, created_at, finished_at, trigger,
               reason
        FROM changed
        RETURNING job_id
    )
    SELECT array_agg(DISTINCT job_id::text) INTO job_ids FROM written;
    FOR i IN 1 .. coalesce(cardinality(job_ids), 0) BY 200 LOOP
        PERFORM pg_notify('hourglass_events', array_to_string(job_ids[i:i + 199], ','));
    END LOOP;
    RETURN NULL;
END
$$;

-- Only a change of state (or of attempt, which a requeue changes with it) is an event; a
-- statement that changes neither (a cancel request, a fenced write that matched nothing)
-- writes nothing and wakes nobody.
CREATE FUNCTION hourglass_runs_updated() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    job_ids text[];
BEGIN
    WITH written AS (
        INSERT INTO run_events (job_id, run_id, state, attempt, scheduled_at, created_at,
                                finished_at, trigger, reason)
        SELECT n.job_id, n.id, n.state, n.attempt, n.scheduled_at, n.created_at,
               n.finished_at, n.trigger, n.reason
        FROM changed n JOIN previous o ON o.id = n.id
        WHERE n.state IS DISTINCT FROM o.state OR n.attempt IS DISTINCT FROM o.attempt
        RETURNING job_id
    )
    SELECT array_agg(DISTINCT job_id::text) INTO job_ids FROM written;
    FOR i IN 1 .. coalesce(cardinality(job_ids), 0) BY 200 LOOP
        PERFORM pg_notify('hourglass_events', array_to_string(job_ids[i:i + 199], ','));
    END LOOP;
    RETURN NULL;
END
$$;

-- One NOTIFY per statement for jobs too: the ids of the jobs that changed.
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
    FOR EACH STATEMENT EXECUTE FUNCTION hourglass_runs_inserted();
CREATE TRIGGER runs_updated AFTER UPDATE ON runs
    REFERENCING OLD TABLE AS previous NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION hourglass_runs_updated();
CREATE TRIGGER jobs_updated AFTER UPDATE ON jobs REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION hourglass_notify_job_changes();

-- Each namespace's limits; a namespace without a row gets the defaults in hourglass.policies.
-- Changed with `hourglass quota set`.
CREATE TABLE namespace_quotas (
    namespace            text PRIMARY KEY,
    max_jobs             bigint NOT NULL CHECK (max_jobs >= 0),
    max_queued_runs      bigint NOT NULL CHECK (max_queued_runs >= 0),
    max_fires_per_second double precision NOT NULL CHECK (max_fires_per_second > 0),
    updated_at           timestamptz NOT NULL,
    -- Runs it may have running at once; the fair claim gives it no slot beyond (0007).
    max_running_runs     bigint NOT NULL CHECK (max_running_runs >= 0)
);

-- How the producer paces each namespace's fires: the theoretical arrival time of its rate
-- limiter (hourglass.policies.admit_fires).
CREATE TABLE namespace_pacing (
    namespace text PRIMARY KEY,
    tat       timestamptz NOT NULL
);

-- Each namespace's jobs, counted exactly by the statements that insert and delete them
-- (whatever their state: that is what max_jobs counts), so that the max_jobs check reads one
-- row. Statement-level: a COPY of 1,000 jobs adds 1,000 at once. A job never changes
-- namespace (jobs_namespace_fixed refuses it).
CREATE TABLE namespace_counts (
    namespace text PRIMARY KEY,
    jobs      bigint NOT NULL CHECK (jobs >= 0)
);

-- The rows are taken in namespace order, so statements of several namespaces do not deadlock.
CREATE FUNCTION hourglass_jobs_counted_in() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO namespace_counts AS c (namespace, jobs)
    SELECT namespace, count(*) FROM inserted GROUP BY namespace ORDER BY namespace
    ON CONFLICT (namespace) DO UPDATE SET jobs = c.jobs + EXCLUDED.jobs;
    RETURN NULL;
END
$$;

CREATE FUNCTION hourglass_jobs_counted_out() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE namespace_counts AS c SET jobs = c.jobs - d.n
    FROM (SELECT namespace, count(*) AS n FROM deleted GROUP BY namespace) AS d
    WHERE c.namespace = d.namespace;
    RETURN NULL;
END
$$;

CREATE FUNCTION hourglass_jobs_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM namespace_counts;
    RETURN NULL;
END
$$;

CREATE FUNCTION hourglass_jobs_namespace_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'job %: a job cannot move to another namespace', OLD.id;
END
$$;

CREATE TRIGGER jobs_counted_in AFTER INSERT ON jobs REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION hourglass_jobs_counted_in();
CREATE TRIGGER jobs_counted_out AFTER DELETE ON jobs REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION hourglass_jobs_counted_out();
CREATE TRIGGER jobs_truncated AFTER TRUNCATE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION hourglass_jobs_truncated();
CREATE TRIGGER jobs_namespace_fixed BEFORE UPDATE OF namespace ON jobs
    FOR EACH ROW WHEN (OLD.namespace IS DISTINCT FROM NEW.namespace)
    EXECUTE FUNCTION hourglass_jobs_namespace_fixed();
