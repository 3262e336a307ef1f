-- Admin API keys. A key is shown once, at creation, as `vpk_<id>_<secret>`; only the SHA-256 of
-- the secret is kept, so the table holds nothing that authenticates.
CREATE TABLE api_keys (
    id           uuid        PRIMARY KEY,
    name         text        NOT NULL,
    scopes       text[]      NOT NULL,
    secret_hash  bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    CONSTRAINT api_keys_name_length CHECK (char_length(name) BETWEEN 1 AND 64),
    CONSTRAINT api_keys_scopes_known CHECK (
        cardinality(scopes) >= 1 AND scopes <@ ARRAY['admin', 'calls:read']::text[]),
    CONSTRAINT api_keys_secret_hash_sha256 CHECK (octet_length(secret_hash) = 32),
    CONSTRAINT api_keys_revoked_after_creation CHECK (revoked_at IS NULL OR revoked_at >= created_at)
);
