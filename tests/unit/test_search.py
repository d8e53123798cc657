"""The issue search syntax parser: terms, values, negation, quoting, times, numbers, errors with
positions, and input that looks like SQL staying plain text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.search import (
    MAX_QUERY_CHARS,
    MAX_TERMS,
    Field,
    Match,
    NumberFilter,
    Op,
    QueryValidationError,
    SearchSyntaxError,
    Status,
    StatusFilter,
    TextTerm,
    TimeBound,
    TimeFilter,
    ValueFilter,
    like_escape,
    parse_search,
)


def one(query: str) -> object:
    (term,) = parse_search(query).terms
    return term


def test_the_issue_example() -> None:
    terms = parse_search("is:unresolved level:error service:checkout TypeError").terms
    assert terms == (
        StatusFilter((Status.UNRESOLVED,), False, 0, "is:unresolved"),
        ValueFilter(Field.LEVEL, (Match("error"),), False, 14, "level:error"),
        ValueFilter(Field.SERVICE, (Match("checkout"),), False, 26, "service:checkout"),
        TextTerm("TypeError", False, False, 43, "TypeError"),
    )


def test_empty_queries() -> None:
    assert parse_search("").is_empty and parse_search(None).is_empty and parse_search("   \t ").is_empty


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("level:x", Field.LEVEL),
        ("service:x", Field.SERVICE),
        ("service.name:x", Field.SERVICE),
        ("environment:x", Field.ENVIRONMENT),
        ("env:x", Field.ENVIRONMENT),
        ("ENV:x", Field.ENVIRONMENT),
        ("type:x", Field.TYPE),
        ("error.type:x", Field.TYPE),
        ("culprit:x", Field.CULPRIT),
        ("release:x", Field.RELEASE),
        ("first_release:x", Field.FIRST_RELEASE),
        ("firstRelease:x", Field.FIRST_RELEASE),
        ("user:x", Field.USER),
        ("user.id:x", Field.USER_ID),
        ("user.email:x", Field.USER_EMAIL),
    ],
)
def test_value_keys(query: str, field: Field) -> None:
    term = one(query)
    assert isinstance(term, ValueFilter) and term.field is field and term.values == (Match("x"),)


def test_tags_keep_their_key() -> None:
    assert one("tag.http.route:/cart") == ValueFilter(
        Field.TAG, (Match("/cart"),), False, 0, "tag.http.route:/cart", "http.route"
    )
    assert one("tags.Browser:Firefox") == ValueFilter(
        Field.TAG, (Match("Firefox"),), False, 0, "tags.Browser:Firefox", "Browser"
    )
    term = one("tags[my-key/with:odd.chars]:v")
    assert isinstance(term, ValueFilter) and term.tag == "my-key/with:odd.chars"


@pytest.mark.parametrize("query", ["!service:checkout", "-service:checkout", "service:!=checkout"])
def test_negation_forms(query: str) -> None:
    term = one(query)
    assert isinstance(term, ValueFilter) and term.negated and term.values == (Match("checkout"),)
    assert isinstance(one("!" + query.lstrip("!-")), ValueFilter)


def test_double_negation_and_lone_dashes() -> None:
    term = one("!service:!=checkout")
    assert isinstance(term, ValueFilter) and not term.negated
    assert parse_search("- -- !!x").terms == (
        TextTerm("-", False, False, 0, "-"),
        TextTerm("--", False, False, 2, "--"),
        TextTerm("!!x", False, False, 5, "!!x"),
    )


def test_quoted_values_and_text() -> None:
    assert one('service:"my svc"') == ValueFilter(Field.SERVICE, (Match("my svc"),), False, 0, 'service:"my svc"')
    assert one('service:""') == ValueFilter(Field.SERVICE, (Match(""),), False, 0, 'service:""')
    assert one('"connection reset"') == TextTerm("connection reset", False, True, 0, '"connection reset"')
    assert one('-"connection reset"') == TextTerm("connection reset", True, True, 0, '-"connection reset"')
    assert one(r'"say \"hi\" \\ now"') == TextTerm('say "hi" \\ now', False, True, 0, r'"say \"hi\" \\ now"')
    term = one(r'type:"a \"b\""')
    assert isinstance(term, ValueFilter) and term.values == (Match('a "b"'),)


def test_wildcards_become_escaped_like_patterns() -> None:
    term = one("service:check*")
    assert isinstance(term, ValueFilter) and term.values == (Match("check%", wildcard=True),)
    term = one("release:1.2_3%*")
    assert isinstance(term, ValueFilter) and term.values == (Match("1.2\\_3\\%%", wildcard=True),)
    term = one(r"service:a\*b")
    assert isinstance(term, ValueFilter) and term.values == (Match("a*b"),)
    term = one(r"service:a\\*")
    assert isinstance(term, ValueFilter) and term.values == (Match("a\\\\%", wildcard=True),)
    assert like_escape("50%_\\") == "50\\%\\_\\\\"


def test_lists() -> None:
    term = one('service:[a, "b c",d*]')
    assert isinstance(term, ValueFilter)
    assert term.values == (Match("a"), Match("b c"), Match("d%", wildcard=True))
    assert one("is:[resolved, muted]") == StatusFilter(
        (Status.RESOLVED, Status.IGNORED), False, 0, "is:[resolved, muted]"
    )


@pytest.mark.parametrize("status", list(Status))
def test_statuses(status: Status) -> None:
    assert one(f"is:{status.value.upper()}") == StatusFilter((status,), False, 0, f"is:{status.value.upper()}")


@pytest.mark.parametrize(
    ("query", "field", "op", "value"),
    [
        ("events:>100", Field.EVENTS, Op.GT, 100),
        ("events:100", Field.EVENTS, Op.EQ, 100),
        ("times_seen:<=3", Field.EVENTS, Op.LE, 3),
        ("users:>=5", Field.USERS, Op.GE, 5),
        ("users:!=5", Field.USERS, Op.NE, 5),
        ("!users:>5", Field.USERS, Op.LE, 5),
        ("-events:<2", Field.EVENTS, Op.GE, 2),
        ("events:>1k", Field.EVENTS, Op.GT, 1000),
        ("events:>1.5k", Field.EVENTS, Op.GT, 1500),
        ("events:2m", Field.EVENTS, Op.EQ, 2_000_000),
        ("events:1b", Field.EVENTS, Op.EQ, 1_000_000_000),
    ],
)
def test_numbers(query: str, field: Field, op: Op, value: int) -> None:
    term = one(query)
    assert isinstance(term, NumberFilter) and (term.field, term.op, term.value) == (field, op, value)


DAY = timedelta(days=1)
AGO = TimeBound(ago=DAY)


@pytest.mark.parametrize(
    ("value", "bounds"),
    [
        # (lower, lower inclusive, upper, upper inclusive): on the timestamp, not on the age.
        ("-1d", (AGO, True, None, False)),  # within the last day
        ("1d", (AGO, True, None, False)),
        ("24h", (TimeBound(ago=timedelta(hours=24)), True, None, False)),
        ("+1d", (None, False, AGO, False)),  # longer ago than a day
        (">1d", (None, False, AGO, False)),
        (">=1d", (None, False, AGO, True)),
        ("<1d", (AGO, False, None, False)),
        ("<=1d", (AGO, True, None, False)),
        ("-90m", (TimeBound(ago=timedelta(minutes=90)), True, None, False)),
        ("-2w", (TimeBound(ago=timedelta(weeks=2)), True, None, False)),
        ("-30s", (TimeBound(ago=timedelta(seconds=30)), True, None, False)),
    ],
)
def test_relative_times(value: str, bounds: tuple[object, ...]) -> None:
    term = one(f"first_seen:{value}")
    assert isinstance(term, TimeFilter) and term.field is Field.FIRST_SEEN
    assert (term.lower, term.lower_inclusive, term.upper, term.upper_inclusive) == bounds


def test_absolute_times() -> None:
    may = datetime(2024, 5, 1, tzinfo=UTC)
    term = one("last_seen:2024-05-01")
    assert isinstance(term, TimeFilter) and term.field is Field.LAST_SEEN
    assert (term.lower, term.lower_inclusive, term.upper, term.upper_inclusive) == (
        TimeBound(at=may),
        True,
        TimeBound(at=may + DAY),
        False,
    )
    term = one("lastSeen:>2024-05-01T12:30:00Z")
    assert isinstance(term, TimeFilter) and term.lower == TimeBound(at=may + timedelta(hours=12, minutes=30))
    term = one("first_seen:<=2024-05-01T14:30:00+02:00")
    assert isinstance(term, TimeFilter) and term.upper == TimeBound(at=may + timedelta(hours=12, minutes=30))
    assert term.upper_inclusive
    term = one("!age:-1d")
    assert isinstance(term, TimeFilter) and term.negated
    term = one("first_seen:!=2024-05-01")
    assert isinstance(term, TimeFilter) and term.negated


def test_unknown_keys_are_text() -> None:
    assert parse_search("TypeError: x is undefined http://host/path servce:checkout").terms == (
        TextTerm("TypeError:", False, False, 0, "TypeError:"),
        TextTerm("x", False, False, 11, "x"),
        TextTerm("is", False, False, 13, "is"),
        TextTerm("undefined", False, False, 16, "undefined"),
        TextTerm("http://host/path", False, False, 26, "http://host/path"),
        TextTerm("servce:checkout", False, False, 43, "servce:checkout"),
    )


@pytest.mark.parametrize(
    "query",
    [
        "'; DROP TABLE appguard.issues; --",
        "1; SELECT pg_sleep(10)",
        "' or '1'='1'",
        "%' and 1=1 --",
        "$$ || (SELECT current_user) || $$",
        "/* comment */ UNION SELECT * FROM pg_user",
        "\\'; DELETE FROM appguard.issues WHERE ''='",
    ],
)
def test_sql_looking_input_is_text(query: str) -> None:
    terms = parse_search(query).terms
    assert terms and all(isinstance(t, TextTerm) for t in terms)
    assert " ".join(t.raw for t in terms) == " ".join(query.split())


@pytest.mark.parametrize(("query", "position"), [("' OR '1'='1'", 2), ("%' AND 1=1 --", 3)])
def test_upper_case_boolean_operators_are_refused_not_run(query: str, position: int) -> None:
    with pytest.raises(SearchSyntaxError, match="boolean operators") as caught:
        parse_search(query)
    assert caught.value.position == position


def test_sql_looking_filter_values_are_values() -> None:
    term = one('service:"\'; DROP TABLE appguard.issues; --"')
    assert isinstance(term, ValueFilter) and term.values == (Match("'; DROP TABLE appguard.issues; --"),)
    term = one("tags[x'),(1]:y")
    assert isinstance(term, ValueFilter) and term.tag == "x'),(1"


@pytest.mark.parametrize(
    ("query", "position", "token", "reason"),
    [
        ("is:open", 3, "open", "unknown status"),
        ("level:error is:", 12, "is:", "missing value"),
        ("events:>lots", 8, "lots", "needs a number"),
        ("events:1.5", 7, "1.5", "whole numbers"),
        ("users:99999999999999999999", 6, "99999999999999999999", "too large"),
        ("first_seen:yesterday", 11, "yesterday", "relative time"),
        ("first_seen:>-1d", 12, "-1d", "either a sign"),
        ("first_seen:-99999999d", 11, "-99999999d", "too large"),
        ("first_seen:2024-02-30", 11, "2024-02-30", "not a valid date"),
        ("first_seen:2024-05-01T10:00", 11, "2024-05-01T10:00", "compare a date and time"),
        ("first_seen:9999-12-31", 11, "9999-12-31", "out of range"),
        ("service:>x", 8, ">", "does not apply"),
        ('a "unterminated', 2, '"unterminated', "unterminated quote"),
        ('service:"a"b', 11, "b", "space after the closing quote"),
        ("service:[a, b", 0, "service:[a, b", "unterminated list"),
        ("service:[a,,b]", 11, "service:[a,,", "empty value"),
        ("service:[a]b", 11, "b", "space after ]"),
        ("service:[a b]", 11, "b]", "expected , or ]"),
        ("TypeError OR ValueError", 10, "OR", "boolean operators"),
    ],
)
def test_errors_name_the_token_and_position(query: str, position: int, token: str, reason: str) -> None:
    with pytest.raises(SearchSyntaxError) as caught:
        parse_search(query)
    error = caught.value
    assert (error.position, error.token) == (position, token)
    assert reason in error.reason
    assert f"position {position}" in str(error)
    assert isinstance(error, QueryValidationError) and isinstance(error, ValueError)


def test_limits_and_text_the_database_cannot_hold() -> None:
    with pytest.raises(QueryValidationError, match="longer than"):
        parse_search("x" * (MAX_QUERY_CHARS + 1))
    with pytest.raises(SearchSyntaxError, match="more than"):
        parse_search(" ".join(["x"] * (MAX_TERMS + 1)))
    with pytest.raises(QueryValidationError, match="NUL"):
        parse_search("service:a\x00b")
    with pytest.raises(QueryValidationError, match="Unicode"):
        parse_search("caf\ud800")
    with pytest.raises(QueryValidationError, match="longer than"):
        parse_search(f"tags[{'k' * 201}]:v")
    assert len(parse_search(" ".join(["x"] * MAX_TERMS)).terms) == MAX_TERMS


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([*'ab:!-"\\*[],><= .%_\'', "is", "events", "tag.", "first_seen", "1d", "2024-05-01"]),
               max_size=30).map("".join))  # fmt: skip
def test_any_input_parses_or_fails_cleanly(query: str) -> None:
    try:
        parsed = parse_search(query)
    except QueryValidationError:
        return
    for term in parsed.terms:
        # Raw slices always come from the input, at their position.
        assert query[term.position : term.position + len(term.raw)] == term.raw
