"""Message parameterization."""

from __future__ import annotations

import pytest

from exporters.errors.normalize import grouping_text, normalize_message


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Order 1234 not found", "Order <int> not found"),
        ("balance -15 below zero", "balance <int> below zero"),
        ("ratio 0.75 too high", "ratio <float> too high"),
        ("user alice@example.com is locked", "user <email> is locked"),
        ("GET https://api.example.com/v1/users/42?x=1 failed", "GET <url> failed"),
        ("cannot reach postgres://app:secret@db:5432/shop", "cannot reach <url>"),
        ("session 550e8400-e29b-41d4-a716-446655440000 expired", "session <uuid> expired"),
        ("connect ECONNREFUSED 127.0.0.1:5432", "connect ECONNREFUSED <ip>"),
        ("no route to 2001:db8::ff00:42:8329", "no route to <ip>"),
        ("listen [::1]:8080: address in use", "listen [<ip>]:<int>: address in use"),
        ("fe80::1%eth0 down", "<ip>%eth0 down"),
        ("deadline 2024-06-11T09:12:33.123Z passed", "deadline <date> passed"),
        ("expires 2024-06-11 09:12:33+02:00", "expires <date>"),
        ("on Mon, 02 Jan 2006 15:04:05 GMT", "on <date>"),
        ("at 09:12:33 today", "at <date> today"),
        ("timed out after 150ms", "timed out after <duration>"),
        ("retry in 1m30s", "retry in <duration>"),
        ("waited 2.5 seconds", "waited <duration>"),
        ("bad pointer 0x7ffee4b2c8a0", "bad pointer <hex>"),
        ("commit 3f2a1b9cde44 missing", "commit <hex> missing"),
        # Names stay: words, identifiers with digits, versions, Ruby/C++ scopes, English.
        ("user_42 and v2 and sha256", "user_42 and v2 and sha256"),
        ("requires numpy 1.26.4", "requires numpy 1.26.4"),
        ("undefined method for Foo::Bar", "undefined method for Foo::Bar"),
        ("deadbeef facade", "deadbeef facade"),
        ('relation "users" does not exist', 'relation "users" does not exist'),
        ("", ""),
    ],
)
def test_placeholders(message: str, expected: str) -> None:
    assert normalize_message(message) == expected


def test_quoted_strings_only_on_request() -> None:
    message = "KeyError 'sku-1234' in \"cart\""
    assert normalize_message(message) == "KeyError 'sku-<int>' in \"cart\""
    assert normalize_message(message, quoted=True) == "KeyError '<str>' in \"<str>\""


def test_only_the_first_two_lines_count() -> None:
    message = "validation failed\n\n  field amount: must be > 0\n  field id: 91 is taken\n"
    assert grouping_text(message) == "validation failed\nfield amount: must be > 0"
    assert normalize_message(message) == "validation failed\nfield amount: must be > <int>"
    assert len(grouping_text("x" * 10_000)) == 1024
    assert grouping_text(None) == ""


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "message",
    [
        "1." * 200_000,
        "a@" * 200_000,
        "::" * 200_000,
        "0a" * 200_000,
        "1:" * 200_000,
        "https://" * 100_000,
        "9" * 400_000,
    ],
    ids=["dots", "ats", "colons", "hex", "digit-colons", "schemes", "digits"],
)
def test_pathological_messages_are_linear(message: str) -> None:
    # Only the first 1024 characters are looked at; placeholders may make them longer.
    assert len(normalize_message(message)) <= 1024 * len("<float>")
