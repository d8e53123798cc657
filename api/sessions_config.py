"""The session replay settings, ``api.sessions`` in the YAML config (see docs/sessions.md).

Kept apart from the application, like :mod:`api.config`, so the config can be loaded without
the web stack.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from collector.configtypes import ComponentConfig, Duration

MIB = 1024 * 1024
DAY = 24 * 3600.0


class SessionsConfig(ComponentConfig):
    """``sessions``: where the replay segments are stored, how large they may be, how long kept."""

    #: Where segment bodies go: ``postgres`` (a bytea table) or ``directory`` (files under ``directory``).
    storage: Literal["postgres", "directory"] = "postgres"
    #: The folder of the ``directory`` storage; made if missing. Every API process must see the same one.
    directory: str | None = None
    #: Largest segment, decompressed (413 beyond).
    max_segment_size: int = Field(default=2 * MIB, ge=1024)
    #: Largest session: the raw JSON of all its segments' events (413 for a segment beyond).
    max_session_size: int = Field(default=100 * MIB, ge=1024)
    #: Sessions whose last event is older than this are deleted with their segments; 0 keeps them.
    retention: Duration = 30 * DAY
    #: How often the retention pass runs.
    retention_interval: Duration = Field(default=3600.0, gt=0)
    #: zstd level the segments are stored at (1 fastest .. 19 smallest).
    compression_level: int = Field(default=3, ge=1, le=19)

    @field_validator("directory")
    @classmethod
    def _directory(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _sizes(self) -> SessionsConfig:
        if self.storage == "directory" and self.directory is None:
            raise ValueError("storage: directory needs directory: <path>")
        if self.max_segment_size > self.max_session_size:
            raise ValueError("max_segment_size must not exceed max_session_size")
        return self
