-- The Leaderboard case's whole schema, inside the resource's own PostgreSQL schema (the
-- connection's search_path): table names are never qualified. migrations/ must produce
-- exactly this (tests/integration/test_serve.py compares them, as for every case).

-- Event types by name; the other tables refer to them by a small id.
CREATE TABLE event_types (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE
);

-- One row per bucket that holds any count: [start, start + size) in Unix seconds.
-- version grows by one with every transaction that changes the bucket's counts: the Redis
-- copy of a bucket carries the version it reflects, so a stale or lost copy is detected.
CREATE TABLE buckets (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type_id integer NOT NULL REFERENCES event_types (id),
    size integer NOT NULL CHECK (size > 0),
    start bigint NOT NULL CHECK (start % size = 0),
    version bigint NOT NULL CHECK (version > 0),
    UNIQUE (type_id, size, start)
);
-- Rollup (one size, a range of starts) and retention (start below the horizon).
CREATE INDEX buckets_by_start ON buckets (start);

-- The full count of every key in every bucket (never a truncated top list: exact top-k over
-- a union of buckets needs every key's count). No foreign key: the store deletes a bucket's
-- counts with it, and a per-row check would cost the ingest.
CREATE TABLE counts (
    bucket_id bigint NOT NULL,
    key text NOT NULL,
    count bigint NOT NULL CHECK (count > 0),
    PRIMARY KEY (bucket_id, key)
);

-- Batches already counted, by their idempotency key: a retried batch counts once.
CREATE TABLE batches (
    batch_id text PRIMARY KEY,
    digest bytea NOT NULL,
    events integer NOT NULL,
    recorded_at timestamptz NOT NULL
);
CREATE INDEX batches_by_time ON batches (recorded_at);

-- Per coarse bucket size, every bucket of that size ending at or before rolled_until is
-- built. Sizes are rolled only from complete finer ones, so rolled_until never runs ahead of
-- the finer size's.
CREATE TABLE rollups (
    size integer PRIMARY KEY,
    rolled_until bigint NOT NULL
);
