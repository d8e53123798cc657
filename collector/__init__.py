"""AppGuard's collector runtime: config, components, pipelines, lifecycle and CLI."""

__version__ = "0.1.0"
