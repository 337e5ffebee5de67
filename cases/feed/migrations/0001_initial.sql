-- The first schema of the Feed case.
--
-- Sharded by user id, never by post id: every table that grows with the users is
-- hash-partitioned by the user it is read by (a user's account, whom they follow, who follows
-- them, their posts, their uploads), so one user's reads touch one partition, and the
-- partitions are the unit that moves to another node when the data outgrows one
-- (docs/architecture.md, "Feed": the scale arithmetic).

-- Handles are looked up by name, so they live in a table of their own keyed by the handle
-- (a partitioned table's unique keys must include its partition key).
CREATE TABLE handles (
    handle text PRIMARY KEY,
    user_id bigint NOT NULL
);

CREATE TABLE users (
    id bigint NOT NULL,
    handle text NOT NULL,
    created_at timestamptz NOT NULL,
    -- Kept by Follow/Unfollow in the same transaction: the fan-out reads it to tell hot
    -- authors (followers > the spec's hotThreshold) from the others.
    followers bigint NOT NULL DEFAULT 0 CHECK (followers >= 0),
    following bigint NOT NULL DEFAULT 0 CHECK (following >= 0),
    -- The last time the user read their home timeline (to the hour): the prewarm job's list.
    active_at timestamptz NOT NULL,
    PRIMARY KEY (id)
) PARTITION BY HASH (id);
CREATE INDEX users_active ON users (active_at);

-- Who a user follows, in the follower's partition (home timeline rebuilds read it) ...
CREATE TABLE follows (
    follower bigint NOT NULL,
    followee bigint NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (follower, followee)
) PARTITION BY HASH (follower);

-- ... and who follows a user, in the followee's partition (the fan-out reads it in chunks,
-- in follower order). Both rows are written in one transaction.
CREATE TABLE followers (
    followee bigint NOT NULL,
    follower bigint NOT NULL,
    PRIMARY KEY (followee, follower)
) PARTITION BY HASH (followee);

CREATE TABLE posts (
    author bigint NOT NULL,
    -- A Snowflake id (ids.py): its creation time is in its top bits.
    id bigint NOT NULL,
    text text NOT NULL,
    -- [{"upload", "digest", "content_type", "size"}] of the post's media.
    media jsonb NOT NULL DEFAULT '[]',
    deleted_at timestamptz,
    -- Set once the post's fan-out is on the Redis stream: a post left false (Redis was away
    -- when it was made) is queued again by the server's sweep, so fan-out is at least once.
    queued boolean NOT NULL DEFAULT false,
    PRIMARY KEY (author, id)
) PARTITION BY HASH (author);
CREATE INDEX posts_unqueued ON posts (id) WHERE NOT queued;
CREATE INDEX posts_deleted ON posts (deleted_at) WHERE deleted_at IS NOT NULL;

-- Resumable media uploads: each received chunk is an object in the object store (parts),
-- listed here in order; the last chunk assembles them into the media's object (digest).
CREATE TABLE uploads (
    user_id bigint NOT NULL,
    id bigint NOT NULL,
    size bigint NOT NULL CHECK (size > 0),
    received bigint NOT NULL DEFAULT 0 CHECK (received >= 0 AND received <= size),
    content_type text NOT NULL,
    parts text[] NOT NULL DEFAULT '{}',
    digest text,
    created_at timestamptz NOT NULL,
    completed_at timestamptz,
    PRIMARY KEY (user_id, id)
) PARTITION BY HASH (user_id);
CREATE INDEX uploads_open ON uploads (created_at) WHERE completed_at IS NULL;

-- 16 partitions of each: enough to show the routing, few enough for a laptop.
DO $$
DECLARE
    t text;
    i int;
BEGIN
    FOREACH t IN ARRAY ARRAY['users', 'follows', 'followers', 'posts', 'uploads'] LOOP
        FOR i IN 0..15 LOOP
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF %I FOR VALUES WITH (MODULUS 16, REMAINDER %s)',
                t || '_p' || lpad(i::text, 2, '0'), t, i
            );
        END LOOP;
    END LOOP;
END
$$;
