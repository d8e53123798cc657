-- Indexes for the dashboard's reads (storage/issue_queries.py). Additive: nothing else changes.
--
-- Like every migration this runs in one transaction, so on a store that already holds many
-- events the index builds hold writers back while they run (about 30 s per million events
-- here); the errors exporter's queue and retries carry the writes over that pause.

-- Charts, the dashboard home and the time-ranged event-level search terms (release:) read
-- every event of a range. Covering their columns lets them read this narrow index alone
-- (index-only scans) instead of the wide rows, whose stack traces and frames make a 7-day
-- chart over a million events several times slower.
CREATE INDEX error_events_project_ts ON appguard.error_events (project_id, "timestamp")
    INCLUDE (issue_id, service_name, environment, service_version);

-- user:, user.id: and user.email: find the issues of one user.
CREATE INDEX issue_users_user ON appguard.issue_users (user_key, issue_id);
