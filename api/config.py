"""The ``api`` extension's settings, as written under ``extensions: api:`` in the YAML config.

Kept apart from the application so that the component registry can load the factory without
importing the web stack.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from api.sessions_config import SessionsConfig
from api.sourcemaps_config import SourceMapsConfig
from collector.configtypes import ComponentConfig, Duration, TLSServerConfig
from collector.netconfig import split_host_port
from storage.users_store import RegistrationMode, Role

# HS256 keys shorter than the hash output weaken the signature (RFC 7518, section 3.2).
MIN_SECRET_LENGTH = 32


class PostgresConfig(ComponentConfig):
    """``postgres``: the database; without this section an embedded server is started."""

    dsn: str
    pool_min_size: int = Field(default=1, ge=0)
    pool_max_size: int = Field(default=10, ge=1)
    connect_timeout: Duration = 30.0

    @model_validator(mode="after")
    def _sizes(self) -> PostgresConfig:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("pool_min_size must not exceed pool_max_size")
        return self


class RedisConfig(ComponentConfig):
    """``redis``: the Redis server; without this section an embedded server is started."""

    url: str
    key_prefix: str = "appguard:"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("url must start with redis://, rediss:// or unix://")
        return value


class AuthConfig(ComponentConfig):
    """``auth``: tokens, cookies and who may register."""

    jwt_secret: str | None = None
    access_token_ttl: Duration = 15 * 60.0
    refresh_token_ttl: Duration = 30 * 24 * 3600.0
    registration: RegistrationMode = RegistrationMode.INVITE
    default_role: Role = Role.MEMBER
    invitation_ttl: Duration = 7 * 24 * 3600.0
    cookie_secure: bool | None = None

    @field_validator("jwt_secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None and len(value.encode()) < MIN_SECRET_LENGTH:
            raise ValueError(f"jwt_secret must be at least {MIN_SECRET_LENGTH} bytes long")
        return value

    @field_validator("access_token_ttl", "refresh_token_ttl", "invitation_ttl")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be a positive duration")
        return value

    @model_validator(mode="after")
    def _ttls(self) -> AuthConfig:
        if self.refresh_token_ttl < self.access_token_ttl:
            raise ValueError("refresh_token_ttl must not be shorter than access_token_ttl")
        return self


class RateLimitsConfig(ComponentConfig):
    """``rate_limits``: failed logins allowed per account and per client address in a window."""

    login_per_account: int = Field(default=10, ge=1)
    login_per_address: int = Field(default=50, ge=1)
    window: Duration = 15 * 60.0

    @field_validator("window")
    @classmethod
    def _window(cls, value: float) -> float:
        if value < 1:
            raise ValueError("window must be at least 1s")
        return value


class LinksConfig(ComponentConfig):
    """Where the issue detail's links to traces, logs and session replays point."""

    grafana_url: str | None = None
    tempo_datasource: str = "tempo"
    loki_datasource: str = "loki"
    replay_url: str | None = None

    @field_validator("grafana_url", "replay_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://", "/")):
            raise ValueError("must start with http://, https:// or /")
        return value.rstrip("/") if value is not None else None


class OtlpHandOffConfig(ComponentConfig):
    """Where an ingest endpoint hands what it converted: the collector's own OTLP/HTTP receiver."""

    #: The receiver's address (``http://host:port``); converted logs, spans and metrics go there.
    otlp_endpoint: str = "http://localhost:4318"
    #: How long to wait for the receiver to accept a request.
    timeout: Duration = 10.0

    @field_validator("otlp_endpoint")
    @classmethod
    def _otlp_endpoint(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be a positive duration")
        return value


class SentryConfig(OtlpHandOffConfig):
    """``sentry``: the ingest endpoints Sentry SDKs report to (``/api/<project>/envelope/``)."""

    #: Largest body accepted, compressed on the wire and decompressed alike (413 beyond).
    max_envelope_size: int = Field(default=20 * 1024 * 1024, ge=1024)
    #: Events and transactions per minute and project for keys without a ``rate_limit`` of
    #: their own; unset: no limit.
    default_rate_limit: int | None = Field(default=None, ge=1)


class IngestConfig(OtlpHandOffConfig):
    """``ingest``: what the endpoints browsers send to share (telemetry, session segments)."""

    #: Origins whose pages may send (CORS); ``*`` lets every origin send.
    allowed_origins: list[str] = Field(default_factory=lambda: ["*"])
    #: Requests per minute per ingest key; unset: no limit.
    rate_limit_per_key: int | None = Field(default=6000, ge=1)
    #: Requests per minute per client address; unset: no limit.
    rate_limit_per_address: int | None = Field(default=1200, ge=1)
    #: Largest telemetry request body (``/api/telemetry/...``), on the wire and decoded (413 beyond).
    max_telemetry_size: int = Field(default=256 * 1024, ge=1024)
    #: Take the client's address from the first ``X-Forwarded-For`` hop (behind a trusted proxy only).
    trust_forwarded_for: bool = False

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        cleaned = []
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"{origin!r} is not an origin: write scheme://host[:port], or * for any")
            cleaned.append(origin.rstrip("/"))
        return cleaned


class ApiConfig(ComponentConfig):
    """The ``api`` extension: the dashboard and REST API server."""

    endpoint: str = "localhost:8080"
    tls: TLSServerConfig | None = None
    public_url: str | None = None
    max_request_body_size: int = Field(default=1024 * 1024, ge=1024)
    postgres: PostgresConfig | None = None
    redis: RedisConfig | None = None
    auth: AuthConfig = Field(default_factory=lambda: AuthConfig())
    rate_limits: RateLimitsConfig = Field(default_factory=lambda: RateLimitsConfig())
    links: LinksConfig = Field(default_factory=lambda: LinksConfig())
    sentry: SentryConfig = Field(default_factory=lambda: SentryConfig())
    ingest: IngestConfig = Field(default_factory=lambda: IngestConfig())
    sessions: SessionsConfig = Field(default_factory=lambda: SessionsConfig())
    sourcemaps: SourceMapsConfig = Field(default_factory=lambda: SourceMapsConfig())
    #: The Prometheus HTTP API that metric alert rules query: their PromQL is checked against it.
    prometheus_url: str | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value:
            raise ValueError("endpoint must be specified")
        split_host_port(value)
        return value

    @field_validator("public_url", "prometheus_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @property
    def cookie_secure(self) -> bool:
        """``auth.cookie_secure``, else true when served over TLS or behind an https public URL."""
        if self.auth.cookie_secure is not None:
            return self.auth.cookie_secure
        return self.tls is not None or (self.public_url or "").startswith("https://")
