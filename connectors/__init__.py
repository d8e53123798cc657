"""AppGuard connectors."""
