-- The MetricsPipeline case's whole schema, inside the resource's own PostgreSQL schema (the
-- connection's search_path): table names are never qualified. migrations/ must produce
-- exactly this (tests/integration/test_serve.py compares them, as for every case).

-- The label index: one row per series (a metric's label set, or a log stream's), by the
-- canonical spelling of its labels.
CREATE TABLE series (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('points', 'logs')),
    key text NOT NULL,
    labels jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, key)
);

-- The inverted index for label matchers: (name, value) -> series. = and != look a pair up;
-- =~ and !~ scan one name's values (text_pattern_ops serves a regex's literal prefix).
CREATE TABLE postings (
    name text NOT NULL,
    value text NOT NULL,
    series_id bigint NOT NULL REFERENCES series (id) ON DELETE CASCADE,
    PRIMARY KEY (name, value, series_id)
);
CREATE INDEX postings_by_series ON postings (series_id);
CREATE INDEX postings_by_pattern ON postings (name, value text_pattern_ops);

-- Every column file in the object store, by partition (hour and series shard). `covers`:
-- for a 5m or 1h rollup, the newest 1m file of its partition that it was built from (a
-- newer 1m file means late points arrived, and the query falls back to the 1m files).
CREATE TABLE segments (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('points', 'rollups', 'logs')),
    resolution integer NOT NULL CHECK (resolution IN (0, 60, 300, 3600)),
    hour bigint NOT NULL CHECK (hour % 3600000 = 0),
    shard integer NOT NULL CHECK (shard >= 0),
    digest text NOT NULL,
    rows bigint NOT NULL CHECK (rows >= 0),
    bytes bigint NOT NULL CHECK (bytes >= 0),
    min_ts bigint NOT NULL,
    max_ts bigint NOT NULL,
    covers bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX segments_by_partition ON segments (kind, resolution, hour, shard);

-- Broker entries whose points are in registered files, by stream entry id: an entry
-- delivered again (a consumer killed after registering its files, before its XACK) is
-- acknowledged without being written twice. Forgotten by the retention job after a day.
CREATE TABLE applied_entries (
    entry_id text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX applied_entries_by_time ON applied_entries (applied_at);
