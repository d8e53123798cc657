"""Ready pipeline configs shipped with AppGuard (``default.yaml`` is the all-in-one one)."""
