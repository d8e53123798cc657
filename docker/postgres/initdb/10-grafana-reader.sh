#!/bin/sh
# Run once by the postgres image, when the postgres-data volume is initialised.
#
# Grafana reads AppGuard's issues and error events as $GRAFANA_DB_USER, a role that may SELECT
# from appguard.issues and appguard.error_events and nothing else: Grafana runs the SQL typed
# into a panel as it is, and the same schema holds the dashboard's accounts (password and token
# hashes) that Grafana must not see.
#
# Those tables do not exist yet: AppGuard's migrations create them when the errors exporter
# first connects, as the owner role ($POSTGRES_USER). So an event trigger grants the reader
# SELECT on each of the two tables when it is created (partitions need no grant: queries go
# through the parent table).
set -eu

psql -v ON_ERROR_STOP=1 --no-psqlrc \
     --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v owner="$POSTGRES_USER" \
     -v db="$POSTGRES_DB" \
     -v reader="${GRAFANA_DB_USER:-grafana_reader}" \
     -v reader_password="${GRAFANA_DB_PASSWORD:-grafana}" <<'SQL'
CREATE SCHEMA IF NOT EXISTS appguard AUTHORIZATION :"owner";
CREATE ROLE :"reader" LOGIN PASSWORD :'reader_password';
GRANT CONNECT ON DATABASE :"db" TO :"reader";
GRANT USAGE ON SCHEMA appguard TO :"reader";
-- The trigger's function reads the reader's name from here (psql variables do not reach
-- into a function body).
ALTER DATABASE :"db" SET appguard.grafana_reader = :'reader';

CREATE FUNCTION public.appguard_grant_grafana_reader() RETURNS event_trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    created record;
    reader text := current_setting('appguard.grafana_reader', true);
BEGIN
    IF coalesce(reader, '') = '' THEN
        RETURN;
    END IF;
    FOR created IN
        SELECT object_identity FROM pg_event_trigger_ddl_commands()
        WHERE command_tag = 'CREATE TABLE'
          AND object_identity IN ('appguard.issues', 'appguard.error_events')
    LOOP
        EXECUTE format('GRANT SELECT ON TABLE %s TO %I', created.object_identity, reader);
    END LOOP;
END
$fn$;

CREATE EVENT TRIGGER appguard_grant_grafana_reader ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE')
    EXECUTE FUNCTION public.appguard_grant_grafana_reader();
SQL
