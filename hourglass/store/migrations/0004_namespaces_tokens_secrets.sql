-- 0004: tenancy. Every job belongs to a namespace; API tokens (stored hashed) belong to one
-- and see only its jobs. Secret environment variables are kept apart from env so that no
-- answer, log or revision ever echoes them.
ALTER TABLE jobs
    ADD COLUMN namespace text NOT NULL DEFAULT 'default',
    ADD COLUMN secret_env jsonb NOT NULL DEFAULT '{}',
    DROP CONSTRAINT jobs_request_id_key,
    ADD CONSTRAINT jobs_namespace_request_id_key UNIQUE (namespace, request_id);

DROP INDEX jobs_created_at;
CREATE INDEX jobs_namespace_created_at ON jobs (namespace, created_at DESC, id DESC);

CREATE TABLE api_tokens (
    id         uuid PRIMARY KEY,
    namespace  text NOT NULL,
    name       text NOT NULL DEFAULT '',
    -- sha256 of the token; the token itself is shown once, when it is created.
    token_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);
