"""AppGuard receivers."""
