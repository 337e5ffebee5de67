-- 0006: tokens can expire, and uploaded binaries belong to the namespaces that uploaded them.
-- The bytes stay content-addressed and stored once (artifacts); who may use them, and whose
-- quota they count against, is per namespace (artifact_owners).
ALTER TABLE api_tokens ADD COLUMN expires_at timestamptz;

CREATE TABLE artifact_owners (
    namespace   text NOT NULL,
    digest      text NOT NULL REFERENCES artifacts (digest) ON DELETE RESTRICT,
    -- The last upload by this namespace: maintenance keeps an unused ownership this long.
    uploaded_at timestamptz NOT NULL,
    PRIMARY KEY (namespace, digest)
);
CREATE INDEX artifact_owners_digest ON artifact_owners (digest);
CREATE INDEX artifact_owners_uploaded_at ON artifact_owners (uploaded_at);

-- Jobs scheduled before this migration keep their binaries: their namespaces own them now.
-- An upload that no job used has no known owner; maintenance deletes it after its grace.
INSERT INTO artifact_owners (namespace, digest, uploaded_at)
SELECT j.namespace, j.binary_digest, min(a.created_at)
FROM jobs j JOIN artifacts a ON a.digest = j.binary_digest
GROUP BY j.namespace, j.binary_digest;

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
