-- Personal API tokens: long-lived credentials a user creates for machines (CI pipelines
-- uploading source maps, scripts), sent as `Authorization: Bearer agt_<random>`.
--
-- A token acts as its user, with the user's current role, capped by `role` when one was chosen
-- at creation. Only the SHA-256 of the secret is stored; `prefix` (the first characters of the
-- secret) is kept so that people can tell their tokens apart. Revoked tokens keep their row
-- (who had what, and when it stopped); they are deleted with their user.

CREATE TABLE appguard.api_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES appguard.users (id) ON DELETE CASCADE,
    name         text NOT NULL,
    prefix       text NOT NULL,
    token_hash   bytea NOT NULL,
    -- The most the token may do; NULL: whatever its user's role allows.
    role         text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Updated at most once a minute, so that a busy pipeline does not write on every request.
    last_used_at timestamptz,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    CONSTRAINT api_tokens_token_hash_key UNIQUE (token_hash),
    CONSTRAINT api_tokens_hash_check CHECK (length(token_hash) = 32),
    CONSTRAINT api_tokens_name_check CHECK (name <> ''),
    CONSTRAINT api_tokens_role_check CHECK (role IS NULL OR role IN ('admin', 'member', 'viewer'))
);
CREATE INDEX api_tokens_user ON appguard.api_tokens (user_id);
