"""The errors exporter: finds exceptions in traces and logs and groups them into issues.

The grouping engine lives beside this module: :mod:`.stacktrace` parses stack trace text,
:mod:`.grouping` fingerprints exceptions into issues, :mod:`.normalize` parameterizes messages.
"""
