-- API keys for the HTTP API. Only a SHA-256 digest of each key's secret is kept: a key is 32
-- random bytes, so a fast digest is as strong as a slow one and costs nothing per request.
CREATE TABLE api_keys (
    id            text PRIMARY KEY,            -- the public part of the key, `rvk_...`
    name          text NOT NULL,
    secret_sha256 bytea NOT NULL,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
