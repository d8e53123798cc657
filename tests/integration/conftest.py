"""Fixtures of the integration tests: the API over a seeded issue dataset, a pool on the test
database and the API's notification queue (a module that defines a fixture of the same name
uses its own)."""

from tests.support.alert_data import pool, queue
from tests.support.issue_data import api, http, seed, store, tokens

__all__ = ["api", "http", "pool", "queue", "seed", "store", "tokens"]
