"""The source map upload settings, ``api.sourcemaps`` in the YAML config (see docs/sourcemaps.md).

Kept apart from the application, like :mod:`api.config`, so the config can be loaded without
the web stack.
"""

from __future__ import annotations

from pydantic import Field

from collector.configtypes import ComponentConfig

MIB = 1024 * 1024


class SourceMapsConfig(ComponentConfig):
    """``sourcemaps``: how large an upload of source maps may be."""

    #: Largest upload request (all its files together, decompressed); 413 beyond. Maps of real
    #: bundles often weigh several megabytes, far above the API's ``max_request_body_size``.
    max_upload_size: int = Field(default=50 * MIB, ge=1024)
