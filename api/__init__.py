"""AppGuard api."""
