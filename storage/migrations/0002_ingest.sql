-- Server-side half of ErrorStore.write_events(): the writer COPYs a batch into a session's
-- temporary staging table, then one call of appguard.ingest_staged() groups it into issues,
-- inserts the events that are not stored yet and updates the issues from those alone, so a
-- retried batch changes nothing and concurrent writers keep exact counts.
--
-- Locks are taken phase by phase, each phase in one global order (new issues by fingerprint,
-- hashes by hash, events by timestamp and id, issue rows by id), and no phase waits on a kind
-- of lock an earlier phase took: two writers can block each other but not deadlock.

-- Creates the session's staging tables once per connection. They empty themselves at commit.
CREATE FUNCTION appguard.ingest_prepare() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    IF to_regclass('pg_temp.appguard_stage') IS NOT NULL THEN
        RETURN;
    END IF;
    CREATE TEMP TABLE appguard_stage (
        event_id              uuid NOT NULL,
        "timestamp"           timestamptz NOT NULL,
        project_id            bigint NOT NULL,
        fingerprint           text COLLATE "C" NOT NULL,
        secondary_fingerprint text COLLATE "C",
        title                 text NOT NULL,
        culprit               text NOT NULL,
        level                 text NOT NULL,
        type                  text NOT NULL,
        message               text NOT NULL,
        trace_id              text COLLATE "C",
        span_id               text COLLATE "C",
        session_id            text COLLATE "C",
        service_name          text NOT NULL,
        service_version       text,
        environment           text NOT NULL,
        user_id               text,
        user_email            text,
        user_agent            text,
        stacktrace            text,
        frames                jsonb,
        attributes            jsonb
    -- Rows are not compressed here: duplicates are thrown away, and the rest are compressed
    -- once, when they reach appguard.error_events.
    ) WITH (toast_tuple_target = 8160) ON COMMIT DELETE ROWS;
    -- No indexes on these tables: emptying an index at commit rewrites its statistics in the
    -- catalog, which would throw away the cached plans of appguard.ingest_staged() each time.
    CREATE TEMP TABLE appguard_groups (
        project_id  bigint NOT NULL,
        fingerprint text COLLATE "C" NOT NULL,
        issue_id    bigint
    ) ON COMMIT DELETE ROWS;
    CREATE TEMP TABLE appguard_inserted (
        event_id        uuid NOT NULL,
        "timestamp"     timestamptz NOT NULL,
        issue_id        bigint NOT NULL,
        user_key        text COLLATE "C",
        service_version text,
        regression      boolean NOT NULL DEFAULT false
    ) ON COMMIT DELETE ROWS;
END
$fn$;

-- Must run in the transaction that filled pg_temp.appguard_stage. Returns one row per event
-- really inserted: outcome 'new' (its issue was created by this call), 'regression' (it
-- reopened a resolved issue) or 'existing'. Staged events already stored return no row.
CREATE FUNCTION appguard.ingest_staged()
RETURNS TABLE (event_id uuid, issue_id bigint, outcome text)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    created bigint[];
BEGIN
    DELETE FROM pg_temp.appguard_groups;
    DELETE FROM pg_temp.appguard_inserted;

    -- 1. Resolve each primary hash of the batch through any known hash, primary or secondary.
    INSERT INTO pg_temp.appguard_groups (project_id, fingerprint, issue_id)
    SELECT p.project_id, p.fingerprint, coalesce(fp.issue_id, sec.issue_id)
    FROM (SELECT DISTINCT s.project_id, s.fingerprint FROM pg_temp.appguard_stage s) p
    LEFT JOIN appguard.issue_fingerprints fp
        ON fp.project_id = p.project_id AND fp.hash = p.fingerprint
    LEFT JOIN (
        SELECT s.project_id, s.fingerprint, min(f.issue_id) AS issue_id
        FROM pg_temp.appguard_stage s
        JOIN appguard.issue_fingerprints f
            ON f.project_id = s.project_id AND f.hash = s.secondary_fingerprint
        GROUP BY s.project_id, s.fingerprint
    ) sec ON sec.project_id = p.project_id AND sec.fingerprint = p.fingerprint;

    -- 2. Create the issues nothing matched, from the earliest event of each. A concurrent
    -- writer creating the same issue makes this wait for its commit and then skip the row.
    WITH candidates AS (
        SELECT DISTINCT ON (s.project_id, s.fingerprint) s.*
        FROM pg_temp.appguard_stage s
        JOIN pg_temp.appguard_groups g
            ON g.project_id = s.project_id AND g.fingerprint = s.fingerprint AND g.issue_id IS NULL
        ORDER BY s.project_id, s.fingerprint, s."timestamp", s.event_id
    ), ins AS (
        INSERT INTO appguard.issues AS i (
            project_id, fingerprint, title, type, culprit, level, service_name, environment,
            first_seen, last_seen, first_release, last_release, metadata)
        SELECT c.project_id, c.fingerprint, c.title, c.type, c.culprit, c.level, c.service_name,
               c.environment, c."timestamp", c."timestamp", c.service_version, c.service_version,
               jsonb_build_object('type', c.type, 'value', left(split_part(c.message, E'\n', 1), 200))
        FROM candidates c
        ORDER BY c.project_id, c.fingerprint
        ON CONFLICT ON CONSTRAINT issues_fingerprint_key DO NOTHING
        RETURNING i.id
    )
    SELECT coalesce(array_agg(ins.id), '{}') INTO created FROM ins;

    -- A new statement sees the issues of writers this one waited for.
    UPDATE pg_temp.appguard_groups g
    SET issue_id = i.id
    FROM appguard.issues i
    WHERE g.issue_id IS NULL AND i.project_id = g.project_id AND i.fingerprint = g.fingerprint;

    -- 3. Remember every hash of the batch that maps nowhere yet.
    INSERT INTO appguard.issue_fingerprints (project_id, hash, issue_id)
    SELECT DISTINCT ON (h.project_id, h.hash) h.project_id, h.hash, h.issue_id
    FROM (
        SELECT g.project_id, g.fingerprint AS hash, g.issue_id FROM pg_temp.appguard_groups g
        UNION
        SELECT s.project_id, s.secondary_fingerprint, g.issue_id
        FROM pg_temp.appguard_stage s
        JOIN pg_temp.appguard_groups g ON g.project_id = s.project_id AND g.fingerprint = s.fingerprint
        WHERE s.secondary_fingerprint IS NOT NULL
    ) h
    WHERE NOT EXISTS (
        SELECT 1 FROM appguard.issue_fingerprints f WHERE f.project_id = h.project_id AND f.hash = h.hash)
    ORDER BY h.project_id, h.hash, h.issue_id
    ON CONFLICT DO NOTHING;

    -- 4. Insert the events not stored yet; what RETURNING gives is what the counts are made of.
    WITH ins AS (
        INSERT INTO appguard.error_events AS e (
            event_id, "timestamp", project_id, issue_id, fingerprint, level, type, message, culprit,
            trace_id, span_id, session_id, service_name, service_version, environment,
            user_id, user_email, user_agent, stacktrace, frames, attributes)
        SELECT s.event_id, s."timestamp", s.project_id, g.issue_id, s.fingerprint, s.level, s.type,
               s.message, s.culprit, s.trace_id, s.span_id, s.session_id, s.service_name,
               s.service_version, s.environment, s.user_id, s.user_email, s.user_agent,
               s.stacktrace, s.frames, s.attributes
        FROM pg_temp.appguard_stage s
        JOIN pg_temp.appguard_groups g ON g.project_id = s.project_id AND g.fingerprint = s.fingerprint
        ORDER BY s."timestamp", s.event_id
        ON CONFLICT DO NOTHING
        RETURNING e.event_id, e."timestamp", e.issue_id, e.user_id, e.user_email, e.service_version
    )
    INSERT INTO pg_temp.appguard_inserted (event_id, "timestamp", issue_id, user_key, service_version)
    SELECT ins.event_id, ins."timestamp", ins.issue_id,
           CASE WHEN ins.user_id IS NOT NULL THEN 'id:' || ins.user_id
                WHEN ins.user_email IS NOT NULL THEN 'email:' || ins.user_email END,
           ins.service_version
    FROM ins;

    -- 5. Lock the touched issues in id order, then judge regressions against their state.
    PERFORM 1 FROM appguard.issues i
    WHERE i.id IN (SELECT n.issue_id FROM pg_temp.appguard_inserted n)
    ORDER BY i.id
    FOR NO KEY UPDATE;

    -- An event regresses a resolved issue when it happened after the resolution and its
    -- version is not older than the release the issue was resolved in (unknown counts as newer).
    UPDATE pg_temp.appguard_inserted n
    SET regression = true
    FROM appguard.issues i
    WHERE i.id = n.issue_id
      AND i.status = 'resolved'
      AND (i.resolved_at IS NULL OR n."timestamp" > i.resolved_at)
      AND (i.resolved_in_release IS NULL OR n.service_version IS NULL
           OR appguard.version_cmp(n.service_version, i.resolved_in_release) >= 0);

    -- 6. Distinct users and the issue counters, from the inserted events only.
    WITH new_users AS (
        INSERT INTO appguard.issue_users AS u (issue_id, user_key)
        SELECT DISTINCT n.issue_id, n.user_key
        FROM pg_temp.appguard_inserted n
        WHERE n.user_key IS NOT NULL
        ORDER BY 1, 2
        ON CONFLICT DO NOTHING
        RETURNING u.issue_id
    ), user_delta AS (
        SELECT nu.issue_id, count(*) AS n FROM new_users nu GROUP BY nu.issue_id
    ), agg AS (
        SELECT n.issue_id,
               count(*) AS n,
               min(n."timestamp") AS first_ts,
               max(n."timestamp") AS last_ts,
               (array_agg(n.service_version ORDER BY n."timestamp" DESC, n.event_id)
                   FILTER (WHERE n.service_version IS NOT NULL))[1] AS last_release,
               bool_or(n.regression) AS regressed
        FROM pg_temp.appguard_inserted n
        GROUP BY n.issue_id
    )
    UPDATE appguard.issues AS i
    SET event_count = i.event_count + a.n,
        user_count = i.user_count + coalesce(ud.n, 0),
        first_seen = least(i.first_seen, a.first_ts),
        last_seen = greatest(i.last_seen, a.last_ts),
        last_release = CASE WHEN a.last_ts >= i.last_seen THEN coalesce(a.last_release, i.last_release)
                            ELSE i.last_release END,
        status = CASE WHEN a.regressed THEN 'unresolved' ELSE i.status END,
        substatus = CASE
            WHEN a.regressed THEN 'regressed'
            WHEN i.status = 'unresolved' AND i.substatus IN ('new', 'regressed')
                 AND i.status_changed_at < now() - interval '7 days' THEN 'ongoing'
            ELSE i.substatus END,
        status_changed_at = CASE
            WHEN a.regressed THEN now()
            WHEN i.status = 'unresolved' AND i.substatus IN ('new', 'regressed')
                 AND i.status_changed_at < now() - interval '7 days' THEN now()
            ELSE i.status_changed_at END,
        resolved_at = CASE WHEN a.regressed THEN NULL ELSE i.resolved_at END,
        resolved_in_release = CASE WHEN a.regressed THEN NULL ELSE i.resolved_in_release END
    FROM agg a
    LEFT JOIN user_delta ud ON ud.issue_id = a.issue_id
    WHERE i.id = a.issue_id;

    RETURN QUERY
    SELECT n.event_id, n.issue_id,
           CASE WHEN n.issue_id = ANY (created) THEN 'new'
                WHEN n.regression THEN 'regression'
                ELSE 'existing' END
    FROM pg_temp.appguard_inserted n;
END
$fn$;
