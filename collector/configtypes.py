"""Building blocks for typed component configs.

Every component config is a :class:`ComponentConfig` (a pydantic model that refuses unknown
keys). Durations are written the Go way (``5s``, ``200ms``, ``1m30s``) or as a number of
seconds, and are held as float seconds.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> Any:
    """``"1m30s"`` -> 90.0; numbers are seconds; anything else is left for pydantic to refuse."""
    if isinstance(value, bool):
        raise ValueError("a duration, like 5s or 200ms, is expected")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text in ("0", ""):
            return 0.0
        pos, total = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos == len(text) and pos > 0:
            return total
        raise ValueError(f"{value!r} is not a duration (like 5s, 200ms, 1m30s)")
    raise ValueError("a duration, like 5s or 200ms, is expected")


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


class ComponentConfig(BaseModel):
    """Base of every component's config: unknown keys are refused, values are checked."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


class TLSClientConfig(ComponentConfig):
    """Client-side TLS, with the stock collector's ``configtls`` keys."""

    insecure: bool = False
    insecure_skip_verify: bool = False
    ca_file: str | None = None
    ca_pem: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name_override: str | None = None
    min_version: str | None = None
    max_version: str | None = None


class TLSServerConfig(ComponentConfig):
    """Server-side TLS, with the stock collector's ``configtls`` keys."""

    cert_file: str
    key_file: str
    ca_file: str | None = None
    client_ca_file: str | None = None
    min_version: str | None = None
    max_version: str | None = None


class RetryConfig(ComponentConfig):
    """``retry_on_failure``: exponential backoff, as the stock exporterhelper does it."""

    enabled: bool = True
    initial_interval: Duration = 5.0
    randomization_factor: float = Field(default=0.5, ge=0, le=1)
    multiplier: float = Field(default=1.5, ge=1)
    max_interval: Duration = 30.0
    max_elapsed_time: Duration = 300.0


class QueueBatchConfig(ComponentConfig):
    """``sending_queue.batch``: exporter-side batching."""

    flush_timeout: Duration = 0.2
    min_size: int = Field(default=8192, ge=0)
    max_size: int = Field(default=0, ge=0)
    sizer: Literal["requests", "items", "bytes"] | None = None


class QueueConfig(ComponentConfig):
    """``sending_queue``: the bounded queue in front of an exporter."""

    enabled: bool = True
    num_consumers: int = Field(default=10, ge=1)
    queue_size: int = Field(default=1000, ge=1)
    sizer: Literal["requests", "items", "bytes"] = "requests"
    block_on_overflow: bool = False
    wait_for_result: bool = False
    storage: str | None = None
    batch: QueueBatchConfig | None = None

    @field_validator("batch", mode="before")
    @classmethod
    def _empty_batch(cls, value: Any) -> Any:
        # ``batch:`` with no value in YAML turns batching on with its defaults.
        return {} if value is None else value


class ServerAuthConfig(ComponentConfig):
    """``auth`` on a server: the id of an authenticator extension."""

    authenticator: str


class ClientAuthConfig(ComponentConfig):
    """``auth`` on a client: the id of an authenticator extension."""

    authenticator: str
