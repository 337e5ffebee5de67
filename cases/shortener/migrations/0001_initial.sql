-- The first schema of the UrlShortener case.

-- Key generation ahead of time: each value is one block of ids (keys.block_ids) that one
-- write server spends alone. A sequence never hands a value out twice, even across
-- rolled-back transactions, so no two servers ever hold the same ids.
CREATE SEQUENCE key_blocks AS bigint MINVALUE 1 START 1;

-- The resource's secrets, made once by the first server: `keys` is the Feistel key.
CREATE TABLE secrets (
    name text PRIMARY KEY,
    value bytea NOT NULL CHECK (octet_length(value) >= 16)
);

-- Every key, a link or a paste: one namespace, so a key is unique across both.
CREATE TABLE links (
    key text PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('url', 'paste')),
    url text,
    blob text,
    size bigint,
    binary_body boolean,
    syntax text,
    alias boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL,
    expires_at timestamptz,
    max_visits bigint CHECK (max_visits > 0),
    visits bigint NOT NULL DEFAULT 0,
    deleted_at timestamptz,
    CHECK ((kind = 'url') = (url IS NOT NULL)),
    CHECK ((kind = 'paste') = (blob IS NOT NULL))
);
CREATE INDEX links_expiring ON links (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX links_deleted ON links (deleted_at) WHERE deleted_at IS NOT NULL;
CREATE INDEX links_by_blob ON links (blob) WHERE blob IS NOT NULL;

-- Paste bodies in the object store, by digest. A row is written before its object, so the
-- purge never deletes an object whose paste is still being made; `touched_at` is the last
-- paste that used it.
CREATE TABLE blobs (
    digest text PRIMARY KEY,
    size bigint NOT NULL,
    touched_at timestamptz NOT NULL
);

-- Visit batches already applied, by their Redis stream entry id: a batch delivered again
-- (a drainer killed after its commit, before its XACK) counts once.
CREATE TABLE applied_batches (
    entry_id text PRIMARY KEY,
    applied_at timestamptz NOT NULL
);
CREATE INDEX applied_batches_by_time ON applied_batches (applied_at);

-- Visits per hour as the drainer applies them; the rollup moves complete hours into days.
CREATE TABLE hourly_visits (
    key text NOT NULL,
    hour timestamptz NOT NULL,
    referrer text NOT NULL,
    agent text NOT NULL,
    count bigint NOT NULL CHECK (count > 0),
    PRIMARY KEY (key, hour, referrer, agent)
);

CREATE TABLE daily_visits (
    key text NOT NULL,
    day date NOT NULL,
    referrer text NOT NULL,
    agent text NOT NULL,
    count bigint NOT NULL CHECK (count > 0),
    PRIMARY KEY (key, day, referrer, agent)
);
