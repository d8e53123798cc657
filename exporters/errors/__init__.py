"""The errors exporter: finds exceptions in traces and logs and groups them into issues.

The grouping engine lives beside this module: :mod:`.stacktrace` parses stack trace text,
:mod:`.grouping` fingerprints exceptions into issues, :mod:`.normalize` parameterizes messages.
:mod:`.extract` finds the exceptions in OTLP requests (shared with the ``errormetrics``
connector) and :mod:`.exporter` is the component itself, whose factory the registry finds here.
"""

from exporters.errors.exporter import factory

__all__ = ["factory"]
