-- Dashboard and API accounts: users, their login sessions, the refresh tokens that keep a
-- session alive, and the invitations an admin hands out.
--
-- A session is one login. Its refresh tokens rotate: each use marks the token rotated and
-- issues the next one. Access tokens (JWTs) name their session, so revoking a session (logout,
-- password change, a disabled account, a reused refresh token) ends its access tokens at once.
-- Token secrets are never stored: only their SHA-256.

CREATE TABLE appguard.users (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email               text NOT NULL,
    name                text NOT NULL DEFAULT '',
    -- argon2id, in the PHC string format (parameters and salt included).
    password_hash       text NOT NULL,
    role                text NOT NULL,
    disabled            boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now(),
    last_login_at       timestamptz,
    CONSTRAINT users_role_check CHECK (role IN ('admin', 'member', 'viewer')),
    CONSTRAINT users_email_check CHECK (email <> '' AND email = lower(email))
);
-- Emails are stored lower-cased, so a plain unique index makes them case-insensitive.
CREATE UNIQUE INDEX users_email_key ON appguard.users (email);

CREATE TABLE appguard.auth_sessions (
    id             uuid PRIMARY KEY,
    user_id        bigint NOT NULL REFERENCES appguard.users (id) ON DELETE CASCADE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_used_at   timestamptz NOT NULL DEFAULT now(),
    -- When the newest refresh token lapses; past it the session is over.
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    -- logout, password_changed, refresh_token_reused, account_disabled
    revoked_reason text,
    user_agent     text NOT NULL DEFAULT '',
    client_address text NOT NULL DEFAULT ''
);
CREATE INDEX auth_sessions_user_active ON appguard.auth_sessions (user_id) WHERE revoked_at IS NULL;
CREATE INDEX auth_sessions_expires ON appguard.auth_sessions (expires_at);

CREATE TABLE appguard.refresh_tokens (
    token_hash bytea PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES appguard.auth_sessions (id) ON DELETE CASCADE,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    -- Set when the token was exchanged for its successor; presenting it again is a reuse.
    rotated_at timestamptz
);
CREATE INDEX refresh_tokens_session ON appguard.refresh_tokens (session_id);

CREATE TABLE appguard.invitations (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash  bytea NOT NULL,
    -- When set, only this address may register with the invitation.
    email       text,
    role        text NOT NULL,
    created_by  bigint REFERENCES appguard.users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    accepted_at timestamptz,
    accepted_by bigint REFERENCES appguard.users (id) ON DELETE SET NULL,
    revoked_at  timestamptz,
    CONSTRAINT invitations_token_hash_key UNIQUE (token_hash),
    CONSTRAINT invitations_role_check CHECK (role IN ('admin', 'member', 'viewer')),
    CONSTRAINT invitations_email_check CHECK (email IS NULL OR (email <> '' AND email = lower(email)))
);
