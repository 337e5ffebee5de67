-- 0011: each namespace's job count, kept exactly by the statements that insert and delete
-- jobs, so that the max_jobs check reads one row instead of counting the namespace's jobs
-- (O(jobs) under the namespace's lock: 0.5 ms at 2,000 jobs, 1.3 ms at 6,000). max_jobs
-- counts every job of the namespace whatever its state, so only inserts and deletes change
-- the count; a job never changes namespace (a trigger refuses it).
CREATE TABLE namespace_counts (
    namespace text PRIMARY KEY,
    jobs      bigint NOT NULL CHECK (jobs >= 0)
);

-- One statement per statement, not per row: a COPY of 1,000 jobs adds 1,000 at once. The
-- rows are taken in namespace order, so statements of several namespaces do not deadlock.
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

-- The count is per namespace: moving a job would need both counts changed. Nothing moves
-- jobs; this makes sure nothing does.
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

-- The jobs that exist now. CREATE TRIGGER above waited for the writers in flight and keeps
-- new ones out until this migration commits, so the count starts exact.
INSERT INTO namespace_counts (namespace, jobs)
SELECT namespace, count(*) FROM jobs GROUP BY namespace;
