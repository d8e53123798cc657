"""AppGuard alerting."""
