"""AppGuard processors."""
