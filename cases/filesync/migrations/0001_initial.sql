-- The first schema of the FileSync case.

-- A workspace: the unit of sharing. `last_cursor` numbers its changes: a commit takes the
-- workspace row's lock to move it, so changes are committed in cursor order and a reader
-- that has seen cursor N never later finds a change below N (a sequence would hand out
-- numbers that commit out of order).
CREATE TABLE workspaces (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    last_cursor bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Members and their tokens (only the sha256 of a token is kept).
CREATE TABLE members (
    workspace_id bigint NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    user_name text NOT NULL,
    access text NOT NULL CHECK (access IN ('read', 'write', 'owner')),
    token_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, user_name)
);

-- The chunks a workspace holds (their bytes are in the object store, named by digest, shared
-- by every workspace of the resource). `refs` counts the versions' references (a digest
-- twice in one version counts twice); a commit raises it in the same statement that checks
-- the chunks exist, so the garbage collector's DELETE ... WHERE refs = 0 either runs first
-- (and the commit finds the chunk unknown) or waits for the commit and then skips the row.
CREATE TABLE chunks (
    workspace_id bigint NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    digest text NOT NULL CHECK (digest ~ '^[0-9a-f]{64}$'),
    size integer NOT NULL CHECK (size > 0),
    refs bigint NOT NULL DEFAULT 0 CHECK (refs >= 0),
    touched_at timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, digest)
);
CREATE INDEX chunks_unreferenced ON chunks (touched_at) WHERE refs = 0;
CREATE INDEX chunks_digest ON chunks (digest);

-- Every version of every file; a deletion is a version too (deleted, no chunks). The head of
-- a path is its highest version. `cursor` is the workspace's change number.
CREATE TABLE versions (
    workspace_id bigint NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    path text NOT NULL,
    version bigint NOT NULL CHECK (version > 0),
    cursor bigint NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    size bigint NOT NULL CHECK (size >= 0),
    digest text NOT NULL,
    chunks text[] NOT NULL,
    device text NOT NULL,
    user_name text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, path, version),
    UNIQUE (workspace_id, cursor)
);

-- Share links: the sha256 of the link's token; the link answers 410 once expired, until the
-- expire job deletes it (then 404).
CREATE TABLE share_links (
    token_hash bytea PRIMARY KEY,
    workspace_id bigint NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    path text NOT NULL,
    version bigint NOT NULL DEFAULT 0,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX share_links_expiry ON share_links (expires_at);
