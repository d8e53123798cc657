"""AppGuard extensions."""
