-- Source maps of minified JavaScript, per project and release (service.version), like the
-- release files of Sentry: `name` is the minified file's URL (https://shop.example/static/app.min.js)
-- or its path under any host written `~/static/app.min.js`. The row holds that file's map and,
-- when it was uploaded too, the minified file itself; both compressed with zstd.
-- The errors exporter looks a frame's abs_path up by exact name, then by `~` + the URL's path,
-- then by `basename` when only one map of the release has it (storage/sourcemaps.py).

CREATE TABLE appguard.source_maps (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id   bigint NOT NULL REFERENCES appguard.projects (id) ON DELETE CASCADE,
    release      text NOT NULL,
    name         text NOT NULL,
    -- The file name after the last '/', for the unique-basename fallback.
    basename     text GENERATED ALWAYS AS (regexp_replace(name, '^.*/', '')) STORED,
    map_zstd     bytea NOT NULL,
    -- The map's size before compression and the hex SHA-256 of its bytes.
    map_size     integer NOT NULL,
    sha256       text NOT NULL,
    source_zstd  bytea,
    source_size  integer,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT source_maps_release_check CHECK (release <> ''),
    CONSTRAINT source_maps_name_check CHECK (name <> ''),
    CONSTRAINT source_maps_source_check CHECK ((source_zstd IS NULL) = (source_size IS NULL))
);
CREATE UNIQUE INDEX source_maps_name_key ON appguard.source_maps (project_id, release, name);
CREATE INDEX source_maps_basename ON appguard.source_maps (project_id, release, basename);
