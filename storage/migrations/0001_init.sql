-- AppGuard error tracking: issues, the hashes that group events into them, the events
-- themselves (partitioned by day) and the distinct users of each issue.
--
-- The migration runner holds an advisory lock and a transaction around this file, and
-- creates the schema and appguard.schema_migrations before it runs.
--
-- Hashes and ids are COLLATE "C": byte comparisons make their indexes several times cheaper
-- to maintain than the database's linguistic collation would, and their order means nothing.

CREATE TABLE appguard.issues (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Room for Sentry-style projects later; everything is project 1 until then.
    project_id          bigint NOT NULL DEFAULT 1,
    -- The primary hash of the event that created the issue.
    fingerprint         text COLLATE "C" NOT NULL,
    title               text NOT NULL,
    type                text NOT NULL DEFAULT '',
    culprit             text NOT NULL DEFAULT '',
    level               text NOT NULL DEFAULT 'error',
    service_name        text NOT NULL DEFAULT '',
    environment         text NOT NULL DEFAULT '',
    status              text NOT NULL DEFAULT 'unresolved',
    -- Only unresolved issues have a substatus: new, ongoing (new or regressed for more than
    -- seven days) or regressed (was resolved, then seen again).
    substatus           text DEFAULT 'new',
    status_changed_at   timestamptz NOT NULL DEFAULT now(),
    resolved_at         timestamptz,
    -- Events from versions older than this one do not reopen a resolved issue.
    resolved_in_release text,
    first_seen          timestamptz NOT NULL,
    last_seen           timestamptz NOT NULL,
    first_release       text,
    last_release        text,
    event_count         bigint NOT NULL DEFAULT 0,
    user_count          bigint NOT NULL DEFAULT 0,
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT issues_fingerprint_key UNIQUE (project_id, fingerprint),
    CONSTRAINT issues_status_check CHECK (status IN ('unresolved', 'resolved', 'ignored')),
    CONSTRAINT issues_substatus_check CHECK (
        (status = 'unresolved' AND substatus IN ('new', 'ongoing', 'regressed'))
        OR (status <> 'unresolved' AND substatus IS NULL)
    )
);

-- The dashboard's issue list: a project's issues of one status, most recently seen first.
CREATE INDEX issues_project_status_last_seen ON appguard.issues (project_id, status, last_seen DESC);

-- Every hash known for an issue, primary and secondary: an event joins the issue that any of
-- its hashes maps to, so changing the grouping algorithm does not split existing issues.
CREATE TABLE appguard.issue_fingerprints (
    project_id bigint NOT NULL DEFAULT 1,
    hash       text COLLATE "C" NOT NULL,
    issue_id   bigint NOT NULL REFERENCES appguard.issues (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, hash)
);
CREATE INDEX issue_fingerprints_issue ON appguard.issue_fingerprints (issue_id);

-- One row per distinct user of an issue, so that user_count is exact. Like error_events it
-- has no foreign key: it is written per event, and only by appguard.ingest_staged().
CREATE TABLE appguard.issue_users (
    issue_id bigint NOT NULL,
    user_key text COLLATE "C" NOT NULL,
    PRIMARY KEY (issue_id, user_key)
);

CREATE SEQUENCE appguard.error_events_id_seq AS bigint CACHE 64;

-- No foreign key to issues: a per-row check on the hottest insert costs more than it guards,
-- and events are only ever written by appguard.ingest_staged() with an issue it resolved.
CREATE TABLE appguard.error_events (
    id              bigint NOT NULL DEFAULT nextval('appguard.error_events_id_seq'),
    event_id        uuid NOT NULL,
    "timestamp"     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    project_id      bigint NOT NULL DEFAULT 1,
    issue_id        bigint NOT NULL,
    fingerprint     text COLLATE "C" NOT NULL,
    level           text NOT NULL DEFAULT 'error',
    type            text NOT NULL DEFAULT '',
    message         text NOT NULL DEFAULT '',
    culprit         text NOT NULL DEFAULT '',
    trace_id        text COLLATE "C",
    span_id         text COLLATE "C",
    session_id      text COLLATE "C",
    service_name    text NOT NULL DEFAULT '',
    service_version text,
    environment     text NOT NULL DEFAULT '',
    user_id         text,
    user_email      text,
    user_agent      text,
    stacktrace      text,
    frames          jsonb,
    attributes      jsonb,
    -- The partition key must be part of every unique key; a retried event keeps its timestamp.
    PRIMARY KEY (event_id, "timestamp")
) PARTITION BY RANGE ("timestamp");

-- Stack traces and frames make most rows long enough to be compressed; lz4 does that several
-- times faster than the default pglz, where the server was built with it.
DO $$
BEGIN
    ALTER TABLE appguard.error_events
        ALTER COLUMN message SET COMPRESSION lz4,
        ALTER COLUMN stacktrace SET COMPRESSION lz4,
        ALTER COLUMN frames SET COMPRESSION lz4,
        ALTER COLUMN attributes SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this PostgreSQL has no lz4; error events are compressed with pglz';
END
$$;

-- Catches timestamps outside the window in which day partitions are created on demand.
CREATE TABLE appguard.error_events_default PARTITION OF appguard.error_events DEFAULT;

CREATE INDEX error_events_issue_ts ON appguard.error_events (issue_id, "timestamp" DESC);
CREATE INDEX error_events_trace ON appguard.error_events (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX error_events_session ON appguard.error_events (session_id, "timestamp") WHERE session_id IS NOT NULL;

-- Compare two release strings: semantic-version precedence when both parse as
-- [package@][v]MAJOR[.MINOR...][-PRERELEASE][+BUILD] with the same package, else byte order.
-- Returns -1, 0 or 1.
CREATE FUNCTION appguard.version_cmp(a text, b text) RETURNS integer
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
DECLARE
    pattern constant text := '^(?:(.*)@)?[vV]?([0-9]+(?:\.[0-9]+)*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$';
    ma text[];
    mb text[];
    na numeric[];
    nb numeric[];
    pa text[];
    pb text[];
    x numeric;
    y numeric;
BEGIN
    ma := regexp_match(a, pattern);
    mb := regexp_match(b, pattern);
    IF ma IS NULL OR mb IS NULL OR ma[1] IS DISTINCT FROM mb[1] THEN
        RETURN CASE WHEN a = b THEN 0 WHEN a COLLATE "C" > b COLLATE "C" THEN 1 ELSE -1 END;
    END IF;
    na := string_to_array(ma[2], '.')::numeric[];
    nb := string_to_array(mb[2], '.')::numeric[];
    -- Missing components count as zero: 1.2 equals 1.2.0.
    FOR i IN 1 .. greatest(cardinality(na), cardinality(nb)) LOOP
        x := coalesce(na[i], 0);
        y := coalesce(nb[i], 0);
        IF x <> y THEN
            RETURN CASE WHEN x > y THEN 1 ELSE -1 END;
        END IF;
    END LOOP;
    -- A pre-release sorts before its release.
    IF ma[3] IS NULL AND mb[3] IS NULL THEN
        RETURN 0;
    ELSIF ma[3] IS NULL THEN
        RETURN 1;
    ELSIF mb[3] IS NULL THEN
        RETURN -1;
    END IF;
    pa := string_to_array(ma[3], '.');
    pb := string_to_array(mb[3], '.');
    FOR i IN 1 .. greatest(cardinality(pa), cardinality(pb)) LOOP
        IF pa[i] IS NULL THEN
            RETURN -1;
        ELSIF pb[i] IS NULL THEN
            RETURN 1;
        ELSIF pa[i] ~ '^[0-9]+$' AND pb[i] ~ '^[0-9]+$' THEN
            IF pa[i]::numeric <> pb[i]::numeric THEN
                RETURN CASE WHEN pa[i]::numeric > pb[i]::numeric THEN 1 ELSE -1 END;
            END IF;
        ELSIF pa[i] ~ '^[0-9]+$' THEN
            RETURN -1;
        ELSIF pb[i] ~ '^[0-9]+$' THEN
            RETURN 1;
        ELSIF pa[i] <> pb[i] THEN
            RETURN CASE WHEN pa[i] COLLATE "C" > pb[i] COLLATE "C" THEN 1 ELSE -1 END;
        END IF;
    END LOOP;
    RETURN 0;
END
$fn$;
