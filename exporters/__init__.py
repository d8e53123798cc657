"""AppGuard exporters."""
