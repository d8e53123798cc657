-- Session replays: what a browser recorded with rrweb, sent in numbered segments.
--
-- appguard.sessions holds one row per recorded session, kept up to date as segments arrive
-- (in any order, some twice). appguard.session_segments records which segments of a session
-- are stored: its primary key is what makes a retried segment a duplicate. The segments'
-- bodies (zstd of the events' JSON) live in appguard.session_segment_bodies with the
-- `postgres` storage, or in files with the `directory` storage (storage/session_blobs.py).

CREATE TABLE appguard.sessions (
    -- Chosen by the browser (a uuid4, typically): unique over all projects.
    id                  text COLLATE "C" PRIMARY KEY,
    project_id          bigint NOT NULL REFERENCES appguard.projects (id) ON DELETE CASCADE,
    -- The earliest and the latest event timestamp of the segments received so far.
    started_at          timestamptz NOT NULL,
    ended_at            timestamptz NOT NULL,
    duration_ms         bigint GENERATED ALWAYS AS ((extract(epoch FROM ended_at - started_at) * 1000)::bigint) STORED,
    page_count          integer NOT NULL DEFAULT 0,
    -- appguard.error markers recorded in the replay (backend errors are in error_events).
    error_count         integer NOT NULL DEFAULT 0,
    segment_count       integer NOT NULL DEFAULT 0,
    event_count         bigint NOT NULL DEFAULT 0,
    -- The events' JSON as sent, and as stored (zstd): the per-session size limit counts raw_bytes.
    raw_bytes           bigint NOT NULL DEFAULT 0,
    stored_bytes        bigint NOT NULL DEFAULT 0,
    user_id             text,
    user_email          text,
    user_name           text,
    user_agent          text NOT NULL DEFAULT '',
    browser             text NOT NULL DEFAULT '',
    browser_version     text NOT NULL DEFAULT '',
    os                  text NOT NULL DEFAULT '',
    os_version          text NOT NULL DEFAULT '',
    device              text NOT NULL DEFAULT '',
    first_url           text NOT NULL DEFAULT '',
    last_url            text NOT NULL DEFAULT '',
    -- The distinct page URLs seen (at most a few hundred), for the url filter.
    urls                text[] NOT NULL DEFAULT '{}',
    service             text,
    environment         text,
    release             text,
    previous_session_id text COLLATE "C",
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
-- The list, newest first, over all projects or one; retention by last activity.
CREATE INDEX sessions_started ON appguard.sessions (started_at DESC, id DESC);
CREATE INDEX sessions_project_started ON appguard.sessions (project_id, started_at DESC, id DESC);
CREATE INDEX sessions_ended ON appguard.sessions (ended_at);
CREATE INDEX sessions_user ON appguard.sessions (user_id) WHERE user_id IS NOT NULL;

CREATE TABLE appguard.session_segments (
    session_id      text COLLATE "C" NOT NULL REFERENCES appguard.sessions (id) ON DELETE CASCADE,
    sequence        integer NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    first_timestamp timestamptz NOT NULL,
    last_timestamp  timestamptz NOT NULL,
    event_count     integer NOT NULL,
    raw_bytes       integer NOT NULL,
    stored_bytes    integer NOT NULL,
    -- SHA-256 of the events' JSON: the same sequence sent again with other events is refused,
    -- not taken for a retry.
    digest          bytea NOT NULL,
    -- Page markers of the segment, so the session's page count can be summed in sequence order:
    -- the URL of its first and last marker, and how many of its markers changed the page after
    -- its first one.
    first_page_url  text,
    last_page_url   text,
    page_changes    integer NOT NULL DEFAULT 0,
    -- The event ids of its appguard.error markers (deduplicated against error_events on read).
    error_ids       text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (session_id, sequence),
    CONSTRAINT session_segments_sequence_check CHECK (sequence >= 0)
);

CREATE TABLE appguard.session_segment_bodies (
    session_id text COLLATE "C" NOT NULL,
    sequence   integer NOT NULL,
    body       bytea NOT NULL,
    PRIMARY KEY (session_id, sequence),
    FOREIGN KEY (session_id, sequence) REFERENCES appguard.session_segments (session_id, sequence) ON DELETE CASCADE
);
-- Bodies are zstd already: store them out of line without compressing them again.
ALTER TABLE appguard.session_segment_bodies ALTER COLUMN body SET STORAGE EXTERNAL;
