-- 0010: the run event log. Every change of a run's state is appended to run_events by the
-- statement that makes it (a statement-level trigger on runs), so WatchJob can deliver each
-- change in order, never coalesced, and a client can resume from a cursor.
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

DROP TRIGGER runs_inserted ON runs;
DROP TRIGGER runs_updated ON runs;
DROP FUNCTION hourglass_notify_changes();
CREATE TRIGGER runs_inserted AFTER INSERT ON runs REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION hourglass_runs_inserted();
CREATE TRIGGER runs_updated AFTER UPDATE ON runs
    REFERENCING OLD TABLE AS previous NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION hourglass_runs_updated();

-- WatchJob no longer reads runs by updated_at (only the bench still reads the column), and
-- keeping this index current cost every update of a run.
DROP INDEX runs_job_updated;
