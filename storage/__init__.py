"""AppGuard storage."""
