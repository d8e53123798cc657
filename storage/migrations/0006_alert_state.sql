-- Alert evaluation state (alerting/state.py): one row per alert instance of a rule, the log
-- of their state changes, and each rule's last evaluation outcome.
--
-- rule_id is the id of appguard.alert_rules (0005) without a foreign key, so that the two
-- migrations do not depend on each other's order and evaluation never waits on rule edits;
-- AlertStateStore.forget_rule() removes what a deleted rule leaves here.

-- An instance is identified by its rule and a fingerprint of its identifying labels (the
-- issue, the service and environment, or the Prometheus series). Threshold and metric
-- instances move inactive -> pending -> firing -> resolved; issue-rule instances are firing
-- while their last notification is within the rule's action interval, then resolved.
CREATE TABLE appguard.alert_states (
    rule_id           bigint NOT NULL,
    fingerprint       text COLLATE "C" NOT NULL,
    state             text NOT NULL,
    severity          text NOT NULL,
    labels            jsonb NOT NULL DEFAULT '{}'::jsonb,
    annotations       jsonb NOT NULL DEFAULT '{}'::jsonb,
    value             double precision,
    -- When the condition started to hold (pending since); kept across restarts, so the
    -- "for" duration is not started again.
    active_since      timestamptz,
    fired_at          timestamptz,
    resolved_at       timestamptz,
    last_evaluated_at timestamptz,
    -- The last notification about this instance: what an issue rule's action_interval and a
    -- restarted evaluator look at so that nobody notifies twice.
    last_notified_at  timestamptz,
    PRIMARY KEY (rule_id, fingerprint),
    CONSTRAINT alert_states_state_check CHECK (state IN ('inactive', 'pending', 'firing', 'resolved')),
    CONSTRAINT alert_states_severity_check CHECK (severity IN ('info', 'warning', 'critical'))
);

-- The dashboard's list of what is firing or pending, across rules.
CREATE INDEX alert_states_active ON appguard.alert_states (state, rule_id) WHERE state IN ('pending', 'firing');

-- Every state change (and every notification of an issue rule, and every severity change of
-- a firing instance), written in the transaction that changed the state.
CREATE TABLE appguard.alert_history (
    id          bigserial PRIMARY KEY,
    rule_id     bigint NOT NULL,
    fingerprint text COLLATE "C" NOT NULL,
    at          timestamptz NOT NULL,
    from_state  text NOT NULL,
    to_state    text NOT NULL,
    severity    text NOT NULL,
    value       double precision,
    labels      jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- A rule's history, newest first, paged by (at, id).
CREATE INDEX alert_history_rule_at ON appguard.alert_history (rule_id, at DESC, id DESC);

-- The last evaluation of each rule: when, and the error it met if it failed (a Prometheus
-- query refused, PostgreSQL unreachable). A failed evaluation changes no alert state.
CREATE TABLE appguard.alert_rule_health (
    rule_id        bigint PRIMARY KEY,
    evaluated_at   timestamptz NOT NULL,
    last_error     text,
    last_error_at  timestamptz,
    last_ok_at     timestamptz
);
