"""Fixtures of the integration tests: the API over a seeded issue dataset (a module that
defines a fixture of the same name uses its own)."""

from tests.support.issue_data import api, http, seed, store, tokens

__all__ = ["api", "http", "seed", "store", "tokens"]
