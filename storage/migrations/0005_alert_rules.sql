-- Alert rules and the notification channels they send to (alerting/store.py).
--
-- A rule's or channel's definition is its validated JSON (alerting/model.py,
-- alerting/channels/specs.py) in `spec`; `name`, `kind` / `type` and `enabled` are copied out
-- of it so that lists filter and names stay unique without reading the JSON. Channels' specs
-- hold their secrets (SMTP passwords, webhook URLs with tokens): the API never returns them.
--
-- `source` says who owns a definition: 'api' (made and edited through the REST API) or 'file'
-- (written only when a rules file is synchronised, read-only to the API). Rules name their
-- channels by name, so a channel a rule sends to is neither renamed nor deleted.

CREATE TABLE appguard.alert_channels (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Room for projects later; everything is project 1 until then, as for issues.
    project_id bigint NOT NULL DEFAULT 1,
    name       text NOT NULL,
    type       text NOT NULL,
    spec       jsonb NOT NULL,
    source     text NOT NULL DEFAULT 'api',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT alert_channels_name_key UNIQUE (project_id, name),
    CONSTRAINT alert_channels_name_check CHECK (name <> ''),
    CONSTRAINT alert_channels_source_check CHECK (source IN ('api', 'file'))
);

CREATE TABLE appguard.alert_rules (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id bigint NOT NULL DEFAULT 1,
    name       text NOT NULL,
    kind       text NOT NULL,
    spec       jsonb NOT NULL,
    enabled    boolean NOT NULL DEFAULT true,
    source     text NOT NULL DEFAULT 'api',
    created_by bigint REFERENCES appguard.users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- Counts changes of the definition, so that evaluation state can tell an edited rule.
    version    integer NOT NULL DEFAULT 1,
    CONSTRAINT alert_rules_name_key UNIQUE (project_id, name),
    CONSTRAINT alert_rules_name_check CHECK (name <> ''),
    CONSTRAINT alert_rules_kind_check CHECK (kind IN ('issue', 'threshold', 'metric')),
    CONSTRAINT alert_rules_source_check CHECK (source IN ('api', 'file'))
);

-- Evaluation reads the enabled rules of every project on each round.
CREATE INDEX alert_rules_enabled ON appguard.alert_rules (project_id, id) WHERE enabled;
