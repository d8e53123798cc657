"""The docker compose stack (docker/) and the configs it mounts, checked without a Docker engine.

What a user copies must start: every file parses, the tools of each backend accept their
config (promtool, amtool, ``appguard-collector validate``), the compose file only refers to
files, services and volumes that exist, the Grafana dashboards only to provisioned data
sources, and the PostgreSQL init script gives Grafana a role that can read AppGuard's tables
and nothing more. ``docker compose config`` runs where the compose plugin is installed.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from alerting import rulefile
from collector.cli import main as appguard_cli
from storage.migrations import migrate_dsn

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yml"
TOP_LEVEL_CONFIGS = ["otel-collector-config.yaml", "prometheus.yml", "tempo.yaml"]
APPGUARD_CONFIGS = ["docker/appguard.yaml", "config/sidecar.yaml", "config/gateway.yaml"]
DASHBOARDS = DOCKER / "grafana" / "dashboards"
DATASOURCES = DOCKER / "grafana" / "provisioning" / "datasources"
# What the stack publishes on the host: OTLP for the applications, AppGuard's dashboard and
# Grafana for people.
PUBLISHED_PORTS = {4317, 4318, 8080, 3000}


def load_yaml(path: Path) -> Any:
    """One YAML document."""
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker/docker-compose.yml, parsed."""
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The compose services by name."""
    return dict(compose["services"])


@pytest.fixture(scope="module")
def datasources() -> dict[str, dict[str, Any]]:
    """Grafana's provisioned data sources by uid."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(DATASOURCES.glob("*.y*ml")):
        for ds in load_yaml(path).get("datasources", []):
            assert ds.get("uid"), f"{path.name}: data source {ds.get('name')!r} has no fixed uid"
            assert ds["uid"] not in found, f"data source uid {ds['uid']!r} provisioned twice"
            found[ds["uid"]] = ds
    return found


def bind_mounts(service: dict[str, Any]) -> Iterator[tuple[Path, str]]:
    """(host path, container path) of a service's bind mounts, host paths as compose resolves them."""
    for volume in service.get("volumes", []):
        source, target = (volume["source"], volume["target"]) if isinstance(volume, dict) else volume.split(":")[:2]
        if source.startswith((".", "/")):
            yield (DOCKER / source).resolve(), target


def published_ports(service: dict[str, Any]) -> Iterator[tuple[str, int]]:
    """(host address, host port) of each published port; short syntax [IP:]HOST:CONTAINER[/proto]."""
    for port in service.get("ports", []):
        if isinstance(port, dict):
            yield port.get("host_ip", "0.0.0.0"), int(port["published"])
            continue
        parts = str(port).split("/")[0].split(":")
        assert len(parts) in (2, 3), f"port {port!r}: give the host port explicitly"
        yield (parts[0] if len(parts) == 3 else "0.0.0.0"), int(parts[-2])


def endpoint_port(endpoint: str) -> int:
    """The port of a ``host:port`` endpoint."""
    return int(endpoint.rsplit(":", 1)[1])


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


# --------------------------------------------------------------------------- parsing


def test_every_yaml_file_parses() -> None:
    files = (
        sorted(DOCKER.rglob("*.y*ml"))
        + [ROOT / name for name in TOP_LEVEL_CONFIGS]
        + [ROOT / "config/sidecar.yaml", ROOT / "config/gateway.yaml"]
    )
    assert len(files) >= 12
    for path in files:
        assert isinstance(load_yaml(path), dict), f"{path.relative_to(ROOT)}: not a YAML map"


def test_dashboards_load_and_use_only_provisioned_data_sources(datasources: dict[str, dict[str, Any]]) -> None:
    files = sorted(DASHBOARDS.glob("*.json"))
    assert files
    used: set[str] = set()
    for path in files:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["title"]
        for panel in panels(dashboard):
            if panel["type"] == "row":
                continue
            refs = [panel["datasource"], *(t["datasource"] for t in panel["targets"] if "datasource" in t)]
            assert panel["targets"], f"{path.name}: panel {panel['title']!r} has no query"
            for ref in refs:
                ds = datasources.get(ref["uid"])
                assert ds is not None, f"{path.name}: panel {panel['title']!r} uses unknown data source {ref['uid']!r}"
                assert ref["type"] == ds["type"], (
                    f"{path.name}: panel {panel['title']!r}: {ref['type']} != {ds['type']}"
                )
                used.add(ref["uid"])
    # The dashboard shows errors from Prometheus and from AppGuard's tables.
    assert {"prometheus", "appguard-postgres"} <= used


def test_dashboard_panels_the_brief_asks_for() -> None:
    dashboard = json.loads((DASHBOARDS / "appguard-overview.json").read_text())
    queries = {
        p["title"]: " ".join(t.get("expr") or t.get("rawSql", "") for t in p["targets"])
        for p in panels(dashboard)
        if p["type"] != "row"
    }
    assert "appguard_errors_total" in queries["Error rate"]
    assert "FROM appguard.issues" in queries["Top issues"] and "ORDER BY event_count DESC" in queries["Top issues"]
    health = queries["Received items"] + queries["Exported items"] + queries["Sending queues"]
    for metric in (
        "otelcol_receiver_accepted_",
        "otelcol_exporter_sent_",
        "otelcol_exporter_send_failed_",
        "otelcol_exporter_queue_size",
    ):
        assert metric in health


def test_data_sources_link_logs_traces_and_exemplars(datasources: dict[str, dict[str, Any]]) -> None:
    by_type = {ds["type"]: ds for ds in datasources.values()}
    tempo, loki, prom = by_type["tempo"], by_type["loki"], by_type["prometheus"]
    postgres = by_type["grafana-postgresql-datasource"]

    to_logs = tempo["jsonData"]["tracesToLogsV2"]
    assert to_logs["datasourceUid"] == loki["uid"] and to_logs["filterByTraceID"] is True
    derived = loki["jsonData"]["derivedFields"]
    assert any(
        f["matcherType"] == "label" and f["matcherRegex"] == "trace_id" and f["datasourceUid"] == tempo["uid"]
        for f in derived
    )
    # `$$` is how a provisioning file writes Grafana's ${__value.raw}.
    assert all(f["url"] == "$${__value.raw}" for f in derived)
    exemplars = prom["jsonData"]["exemplarTraceIdDestinations"]
    assert {"trace_id", "traceID"} <= {e["name"] for e in exemplars}
    assert all(e["datasourceUid"] == tempo["uid"] for e in exemplars)
    for link in (tempo["jsonData"]["tracesToMetrics"], tempo["jsonData"]["serviceMap"]):
        assert link["datasourceUid"] == prom["uid"]
    assert postgres["url"] == "postgres:5432"


def test_loki_tempo_and_prometheus_fit_together(services: dict[str, dict[str, Any]]) -> None:
    loki = load_yaml(DOCKER / "loki" / "config.yaml")
    schema = loki["schema_config"]["configs"][-1]
    assert (schema["store"], schema["schema"], schema["object_store"]) == ("tsdb", "v13", "filesystem")
    assert loki["limits_config"]["allow_structured_metadata"] is True
    assert loki["server"]["http_listen_port"] == 3100

    tempo = load_yaml(ROOT / "tempo.yaml")
    for protocol in tempo["distributor"]["receivers"]["otlp"]["protocols"].values():
        assert protocol["endpoint"].startswith("0.0.0.0:")
    write = tempo["metrics_generator"]["storage"]["remote_write"][0]
    assert write == {"url": "http://prometheus:9090/api/v1/write", "send_exemplars": True}
    assert tempo["storage"]["trace"]["backend"] == "local"
    assert "--web.enable-remote-write-receiver" in services["prometheus"]["command"]
    assert "--enable-feature=exemplar-storage" in services["prometheus"]["command"]


# --------------------------------------------------------------------------- the backends' own tools


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt-get install -y prometheus)")
def test_promtool_accepts_the_prometheus_config_and_rules() -> None:
    check = subprocess.run(["promtool", "check", "config", "prometheus.yml"], cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # The rule_files glob is relative to prometheus.yml: it must find the repository's rules.
    rules = sorted((DOCKER / "prometheus" / "rules").glob("*.yml"))
    assert rules and f"{len(rules)} rule files found" in check.stdout + check.stderr
    tests = sorted((DOCKER / "prometheus" / "tests").glob("*.yml"))
    unit = subprocess.run(["promtool", "test", "rules", *map(str, tests)], cwd=ROOT, capture_output=True, text=True)
    assert unit.returncode == 0, unit.stdout + unit.stderr


@pytest.mark.skipif(
    shutil.which("amtool") is None, reason="amtool not installed (apt-get install -y prometheus-alertmanager)"
)
def test_amtool_accepts_the_alertmanager_config() -> None:
    check = subprocess.run(
        ["amtool", "check-config", "docker/alertmanager/alertmanager.yml"], cwd=ROOT, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("config", [*APPGUARD_CONFIGS, "otel-collector-config.yaml"])
def test_appguard_validates_the_config(
    config: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """AppGuard's configs with nothing set in the environment: every variable has a default.

    The stock collector's config is validated too: it only uses components AppGuard also has,
    so AppGuard reading it unchanged shows it keeps to the stock keys.
    """
    for name in list(os.environ):
        if name.startswith("APPGUARD_"):
            monkeypatch.delenv(name)
    # Set through monkeypatch, so that the CLI's own default for it does not outlive the test.
    monkeypatch.setenv("APPGUARD_DATA_DIR", str(tmp_path))
    assert appguard_cli(["validate", "--config", str(ROOT / config)]) == 0, capsys.readouterr().err
    assert re.search(r"configuration is valid: [3-9] pipelines", capsys.readouterr().out)


@pytest.mark.parametrize("config", APPGUARD_CONFIGS)
def test_environment_variables_have_defaults(config: str) -> None:
    text = (ROOT / config).read_text()
    refs = re.findall(
        r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}",
        "\n".join(line.split("#")[0] for line in text.splitlines()),
    )
    assert refs
    # APPGUARD_DATA_DIR is always set: appguard-collector gives it its default.
    missing = [name for name, default in refs if not default and name != "APPGUARD_DATA_DIR"]
    assert missing == [], f"{config}: no default for {missing}"


# --------------------------------------------------------------------------- compose semantics


def test_every_service_has_a_pinned_image_or_a_build(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if "build" in service:
            build = service["build"]
            context = (DOCKER / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), f"{name}: no Dockerfile at {build['dockerfile']}"
            continue
        image = service["image"]
        repo, _, tag = image.partition("@")[0].rpartition(":")
        assert repo and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: image {image!r} is not pinned to a version"


def test_depends_on_targets_exist_and_healthy_means_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends = service.get("depends_on", {})
        for target, how in depends.items() if isinstance(depends, dict) else ((t, {}) for t in depends):
            assert target in services, f"{name} depends on unknown service {target!r}"
            condition = how.get("condition", "service_started")
            assert condition in ("service_started", "service_healthy", "service_completed_successfully")
            if condition == "service_healthy":
                assert "healthcheck" in services[target], (
                    f"{name} waits for {target} to be healthy, which has no healthcheck"
                )


def test_mounted_files_exist_and_named_volumes_are_declared(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for source, _ in bind_mounts(service):
            assert source.exists(), f"{name} mounts {source}, which is not in the repository"
            assert ROOT in source.parents, f"{name} mounts {source}, outside the repository"
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} uses volume {source!r}, not declared at the top level"


def test_published_ports_do_not_collide_and_are_only_the_needed_ones(services: dict[str, dict[str, Any]]) -> None:
    seen: dict[int, str] = {}
    for name, service in services.items():
        for _, port in published_ports(service):
            assert port not in seen, f"host port {port} published by {seen[port]} and {name}"
            seen[port] = name
    assert set(seen) == PUBLISHED_PORTS
    assert {seen[4317], seen[4318]} == {"otel-collector"}
    assert (seen[8080], seen[3000]) == ("appguard", "grafana")
    # The two web UIs have default passwords or a first account anyone may register: loopback only.
    for name in ("appguard", "grafana"):
        assert {host for host, _ in published_ports(services[name])} == {"127.0.0.1"}


def test_the_pieces_point_at_each_other(services: dict[str, dict[str, Any]]) -> None:
    """Mounts, ports and addresses agree across the compose file and the configs it mounts."""
    mounts = {target: source for source, target in bind_mounts(services["appguard"])}
    assert mounts["/etc/appguard/config.yaml"] == DOCKER / "appguard.yaml"
    assert (DOCKER / "Dockerfile").read_text().count("python:3.11-slim") == 1
    appguard = load_yaml(DOCKER / "appguard.yaml")

    stock = load_yaml(ROOT / "otel-collector-config.yaml")
    forward = stock["exporters"]["otlp_grpc/appguard"]
    assert (
        forward["endpoint"]
        == f"appguard:{endpoint_port(appguard['receivers']['otlp']['protocols']['grpc']['endpoint'])}"
    )
    assert forward["tls"]["insecure"] is True
    stock_mounts = {target: source for source, target in bind_mounts(services["otel-collector"])}
    assert stock_mounts["/etc/otelcol-contrib/config.yaml"] == ROOT / "otel-collector-config.yaml"

    api_port = endpoint_port(appguard["extensions"]["api"]["endpoint"])
    assert f"127.0.0.1:{api_port}:{api_port}" in services["appguard"]["ports"]
    health_port = endpoint_port(appguard["extensions"]["health_check"]["endpoint"])
    assert f"127.0.0.1:{health_port}/" in " ".join(services["appguard"]["healthcheck"]["test"])

    telemetry = appguard["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"]
    scrape = {
        job["job_name"]: job["static_configs"][0]["targets"]
        for job in load_yaml(ROOT / "prometheus.yml")["scrape_configs"]
    }
    assert scrape["appguard"] == [f"appguard:{telemetry['port']}"]
    assert scrape["appguard-metrics"] == [f"appguard:{endpoint_port(appguard['exporters']['prometheus']['endpoint'])}"]
    for targets in scrape.values():
        for target in targets:
            host = target.rsplit(":", 1)[0]
            assert host == "localhost" or host in services, f"Prometheus scrapes {target}, not a compose service"

    # Alerting: the mounted rules file loads, and its channels and Prometheus are compose services.
    alerting = appguard["extensions"]["alerting"]
    assert mounts[alerting["rules_file"]] == DOCKER / "alert-rules.yaml"
    rules = rulefile.load(DOCKER / "alert-rules.yaml")
    assert rules.rules and all(set(rule.channels) <= set(rules.channels) for rule in rules.rules)
    for channel in rules.channels.values():
        assert urlsplit(getattr(channel, "url", "")).hostname in services, channel
    assert urlsplit(alerting["prometheus"]["endpoint"]).hostname in services
    assert "alerting" in appguard["service"]["extensions"]
    assert "alerting" in appguard["exporters"]["errors"]["observers"]

    for exporter in appguard["exporters"].values():
        endpoint = str(exporter.get("endpoint", ""))
        default = re.sub(r"\$\{env:[A-Z_]+:-([^}]*)\}", r"\1", endpoint)
        host = urlsplit(default).hostname if "://" in default else default.rsplit(":", 1)[0]
        assert host == "0.0.0.0" or host in services, f"AppGuard exports to {default}, not a compose service"


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="the docker compose plugin is not installed",
)
def test_docker_compose_config_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- PostgreSQL and Grafana's role


def expand_grafana_macros(query: str) -> str:
    """Grafana's PostgreSQL macros used by the dashboard, as Grafana expands them (last hour)."""
    query = re.sub(
        r"\$__timeFilter\(([^)]+)\)", r"\1 BETWEEN now() - interval '1 hour' AND now() + interval '1 minute'", query
    )

    def group(match: re.Match[str]) -> str:
        column, interval = match.group(1).strip(), match.group(2)
        seconds = int(interval[:-1]) * {"s": 1, "m": 60, "h": 3600}[interval[-1]]
        return f'floor(extract(epoch from {column})/{seconds})*{seconds} AS "time"'

    query = re.sub(r"\$__timeGroupAlias\(([^,]+),\s*'(\d+[smh])'\)", group, query)
    assert "$__" not in query, f"a macro this test does not know: {query}"
    return query


@pytest.fixture
def reader(pg_dsn: str) -> Iterator[tuple[str, str]]:
    """Run the compose stack's init script on a fresh database; yield (owner DSN, reader DSN)."""
    if shutil.which("psql") is None:
        pytest.skip("psql not installed")
    params = conninfo_to_dict(pg_dsn)
    role = f"appguard_t_reader_{os.getpid()}"
    env = {
        **os.environ,
        "PGHOST": str(params.get("host", "127.0.0.1")),
        "PGPORT": str(params.get("port", 5432)),
        "PGPASSWORD": str(params.get("password", "")),
        "POSTGRES_USER": str(params.get("user") or getpass.getuser()),
        "POSTGRES_DB": str(params["dbname"]),
        "GRAFANA_DB_USER": role,
        "GRAFANA_DB_PASSWORD": "reader-secret",
    }
    script = DOCKER / "postgres" / "initdb" / "10-grafana-reader.sh"
    run = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
    try:
        assert run.returncode == 0, run.stdout + run.stderr
        reader_dsn = psycopg.conninfo.make_conninfo(pg_dsn, user=role, password="reader-secret")
        yield pg_dsn, reader_dsn
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if exists:
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


async def test_grafana_role_reads_the_issues_the_dashboard_shows(reader: tuple[str, str]) -> None:
    owner_dsn, reader_dsn = reader
    # The errors exporter migrates the schema when it first connects, after the init script.
    await migrate_dsn(owner_dsn)
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        for title, count in (("TypeError: x is undefined", 7), ("KeyError: 'user'", 42)):
            issue_id = conn.execute(
                "INSERT INTO appguard.issues (fingerprint, title, service_name, first_seen, last_seen, event_count)"
                " VALUES (md5(%s), %s, 'checkout', now() - interval '5 minutes', now(), %s) RETURNING id",
                (title, title, count),
            ).fetchone()
            assert issue_id is not None
            conn.execute(
                "INSERT INTO appguard.error_events (event_id, timestamp, issue_id, fingerprint, message)"
                " VALUES (gen_random_uuid(), now(), %s, md5(%s), %s)",
                (issue_id[0], title, title),
            )

    dashboard = json.loads((DASHBOARDS / "appguard-overview.json").read_text())
    sql_panels = {
        p["title"]: p["targets"][0]["rawSql"]
        for p in panels(dashboard)
        if p.get("datasource", {}).get("uid") == "appguard-postgres"
    }
    with psycopg.connect(reader_dsn) as conn:
        top = conn.execute(expand_grafana_macros(sql_panels["Top issues"]).encode()).fetchall()
        assert [(row[1], row[7]) for row in top] == [("KeyError: 'user'", 42), ("TypeError: x is undefined", 7)]
        events = conn.execute(expand_grafana_macros(sql_panels["Error events stored"]).encode()).fetchall()
        assert sum(row[1] for row in events) == 2
        # Grafana runs whatever SQL a panel holds: its role must not be able to write, nor
        # read the schema's other tables (the dashboard's accounts live there too).
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM appguard.issues")
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM appguard.issue_fingerprints")
