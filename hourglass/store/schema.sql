-- The whole current schema of hourglass, the single source of truth. The numbered files in
-- migrations/ must produce exactly this (tests/integration/test_migrations.py checks it);
-- change both together.

-- One row per job. next_fire_at is the job's only schedule state: the producer advances it in
-- the same transaction that records the fire, so no fire is lost or doubled by a restart.
CREATE TABLE jobs (
    id             uuid PRIMARY KEY,
    name           text NOT NULL,
    -- Idempotency of ScheduleJob: the client's key and a digest of the request it came with.
    request_id     text UNIQUE,
    request_digest bytea,
    command        text[] NOT NULL,
    args           text[] NOT NULL DEFAULT '{}',
    env            jsonb NOT NULL DEFAULT '{}',
    image          text NOT NULL DEFAULT '',
    working_dir    text NOT NULL DEFAULT '',
    schedule       jsonb NOT NULL,
    max_attempts   integer NOT NULL DEFAULT 1 CHECK (max_attempts BETWEEN 1 AND 100),
    retry_backoff  interval NOT NULL DEFAULT '1 second',
    timeout        interval,
    state          text NOT NULL DEFAULT 'active'
                   CHECK (state IN ('active', 'completed', 'cancelled')),
    next_fire_at   timestamptz,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    CHECK (next_fire_at IS NULL OR state = 'active')
);

-- The due-job query reads this index from its start. Only jobs that will fire again are in it,
-- so its cost depends on how many jobs are due, not on how many exist.
CREATE INDEX jobs_next_fire_at ON jobs (next_fire_at) WHERE next_fire_at IS NOT NULL;
-- ListJobs pages newest first.
CREATE INDEX jobs_created_at ON jobs (created_at DESC, id DESC);

-- One row per fire of a job: the queue and the history at once.
CREATE TABLE runs (
    id            uuid PRIMARY KEY,
    job_id        uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    scheduled_at  timestamptz NOT NULL,
    state         text NOT NULL
                  CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'timed_out',
                                   'cancelled')),
    -- The current attempt while queued or running; the last one once terminal.
    attempt       integer NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    -- A queued run may be claimed from this instant on (later than now during a retry backoff).
    available_at  timestamptz NOT NULL,
    -- The token of the attempt that holds the run while it is running.
    fencing_token bigint,
    created_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    -- A fire happens once: a second producer, or a retried transaction, cannot double it.
    UNIQUE (job_id, scheduled_at)
);

-- Workers claim queued runs in the order they became available.
CREATE INDEX runs_queued ON runs (available_at) WHERE state = 'queued';
-- The claimer sweeps the runs held right now.
CREATE INDEX runs_running ON runs (id) WHERE state = 'running';

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
    PRIMARY KEY (run_id, number)
);
