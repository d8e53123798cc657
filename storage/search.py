"""The issue search syntax: a Sentry-like query string parsed into a structured query.

``is:unresolved level:error service:checkout !env:staging events:>100 "connection reset"``
parses into a :class:`SearchQuery` of terms, all of which must hold (AND):

- :class:`StatusFilter` — ``is:unresolved|resolved|ignored|regressed|new|ongoing``;
- :class:`ValueFilter` — ``key:value`` on a text field of the issue (``level``, ``service``,
  ``environment``/``env``, ``type``, ``culprit``, ``first_release``), of its events
  (``release``, ``tag.<key>`` / ``tags[<key>]`` on event attributes) or of its users
  (``user``, ``user.id``, ``user.email``); a value may hold ``*`` wildcards, and
  ``key:[a, b]`` matches any of several values;
- :class:`NumberFilter` — ``events:>100``, ``users:>=5``;
- :class:`TimeFilter` — ``first_seen:-24h`` (within the last 24 hours), ``last_seen:+7d``
  (longer ago than 7 days), ``first_seen:>24h`` (an age: longer ago than 24 hours),
  ``last_seen:>=2024-05-01T12:00:00Z`` (a point in time), ``first_seen:2024-05-01`` (that UTC day);
- :class:`TextTerm` — free text, a word or a ``"quoted phrase"``, matched case-insensitively
  against the issue's title, culprit and type.

``!`` or ``-`` before a term negates it. A token whose key is not one of the keys above is
free text (so pasted ``TypeError: x is undefined`` searches for that text); attributes are
searched with the explicit ``tag.`` prefix. Malformed input raises :class:`SearchSyntaxError`
naming the token and its position. The parser builds no SQL: values stay data, and the query
builder passes them as parameters (see ``docs/search.md``).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

#: Queries longer than this are refused (characters).
MAX_QUERY_CHARS = 2000
#: Terms per query.
MAX_TERMS = 50
#: Values in one ``key:[a, b, ...]`` list.
MAX_LIST_VALUES = 100
#: The longest relative time accepted (``-36500d``).
MAX_AGE = timedelta(days=36500)
#: Counts compare as PostgreSQL bigint.
MAX_NUMBER = 2**63 - 1


class QueryValidationError(ValueError):
    """A query, filter, cursor or action argument that cannot be served; the client's mistake."""


class SearchSyntaxError(QueryValidationError):
    """A search string that does not parse; ``position`` is the 0-based offset of ``token``."""

    def __init__(self, message: str, *, position: int, token: str) -> None:
        super().__init__(f"{message} (at position {position}: {token!r})")
        self.reason = message
        self.position = position
        self.token = token


class Field(enum.StrEnum):
    """What a filter looks at."""

    STATUS = "is"
    LEVEL = "level"
    SERVICE = "service"
    ENVIRONMENT = "environment"
    TYPE = "type"
    CULPRIT = "culprit"
    FIRST_RELEASE = "first_release"
    RELEASE = "release"
    TAG = "tag"
    USER = "user"
    USER_ID = "user.id"
    USER_EMAIL = "user.email"
    FIRST_SEEN = "first_seen"
    LAST_SEEN = "last_seen"
    EVENTS = "events"
    USERS = "users"


class Status(enum.StrEnum):
    """Values of ``is:``: an issue status, or an unresolved issue's substatus."""

    UNRESOLVED = "unresolved"
    RESOLVED = "resolved"
    IGNORED = "ignored"
    REGRESSED = "regressed"
    NEW = "new"
    ONGOING = "ongoing"


class Op(enum.StrEnum):
    """Comparison operators of numeric filters."""

    EQ = "="
    NE = "!="
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="


# Keys as typed (lower-cased) -> field. Sentry's camelCase spellings are accepted too.
KEYS: dict[str, Field] = {
    "is": Field.STATUS,
    "level": Field.LEVEL,
    "service": Field.SERVICE,
    "service.name": Field.SERVICE,
    "environment": Field.ENVIRONMENT,
    "env": Field.ENVIRONMENT,
    "type": Field.TYPE,
    "error.type": Field.TYPE,
    "exception.type": Field.TYPE,
    "culprit": Field.CULPRIT,
    "first_release": Field.FIRST_RELEASE,
    "firstrelease": Field.FIRST_RELEASE,
    "release": Field.RELEASE,
    "service.version": Field.RELEASE,
    "user": Field.USER,
    "user.id": Field.USER_ID,
    "user.email": Field.USER_EMAIL,
    "first_seen": Field.FIRST_SEEN,
    "firstseen": Field.FIRST_SEEN,
    "age": Field.FIRST_SEEN,
    "last_seen": Field.LAST_SEEN,
    "lastseen": Field.LAST_SEEN,
    "events": Field.EVENTS,
    "times_seen": Field.EVENTS,
    "timesseen": Field.EVENTS,
    "users": Field.USERS,
    "user_count": Field.USERS,
}

_TEXT_FIELDS = frozenset(
    {
        Field.LEVEL,
        Field.SERVICE,
        Field.ENVIRONMENT,
        Field.TYPE,
        Field.CULPRIT,
        Field.FIRST_RELEASE,
        Field.RELEASE,
        Field.TAG,
        Field.USER,
        Field.USER_ID,
        Field.USER_EMAIL,
    }
)
_STATUS_ALIASES = {"muted": Status.IGNORED, "archived": Status.IGNORED}

# A key followed by its colon: ``tags[any key]:`` or a dotted name.
_KEY_RE = re.compile(r"tags\[(?P<bracketed>[^\]\s]+)\]:|(?P<key>[A-Za-z_][A-Za-z0-9_.\-]*):")
_OPERATOR_RE = re.compile(r">=|<=|!=|>|<|=")
_NUMBER_RE = re.compile(r"(?P<digits>[0-9]+(?:\.[0-9]+)?)(?P<suffix>[kmb])?", re.IGNORECASE)
_DURATION_RE = re.compile(r"(?P<sign>[+-])?(?P<amount>[0-9]+)(?P<unit>s|min|m|h|d|w)", re.IGNORECASE)
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATETIME_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?",
    re.IGNORECASE,
)
_UNIT_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_NUMBER_SUFFIX = {"k": 10**3, "m": 10**6, "b": 10**9}
# lower bound, inclusive?, upper bound, inclusive?
_Bounds = tuple["TimeBound | None", bool, "TimeBound | None", bool]
_NEGATED = {Op.EQ: Op.NE, Op.NE: Op.EQ, Op.GT: Op.LE, Op.GE: Op.LT, Op.LT: Op.GE, Op.LE: Op.GT}


@dataclass(frozen=True, slots=True)
class Match:
    """One value to match: ``text`` exactly, or as a pattern when ``wildcard``.

    With ``wildcard`` the text is a SQL ``LIKE`` pattern whose ``%`` came from ``*`` and whose
    literal ``%``, ``_`` and ``\\`` are escaped with a backslash.
    """

    text: str
    wildcard: bool = False


@dataclass(frozen=True, slots=True)
class StatusFilter:
    """``is:<status>``: the issue has any of ``statuses``."""

    statuses: tuple[Status, ...]
    negated: bool
    position: int
    raw: str


@dataclass(frozen=True, slots=True)
class ValueFilter:
    """``key:value``: a text field equals (or matches) any of ``values``.

    ``tag`` is the attribute key when ``field`` is :attr:`Field.TAG`.
    """

    field: Field
    values: tuple[Match, ...]
    negated: bool
    position: int
    raw: str
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class NumberFilter:
    """``events:>100``: the issue's count compared with ``value`` (negation folded into ``op``)."""

    field: Field
    op: Op
    value: int
    position: int
    raw: str


@dataclass(frozen=True, slots=True)
class TimeBound:
    """A point in time: either ``at`` or ``ago`` before the moment the query runs."""

    at: datetime | None = None
    ago: timedelta | None = None


@dataclass(frozen=True, slots=True)
class TimeFilter:
    """``first_seen``/``last_seen`` within bounds: ``lower <(=) value <(=) upper``, maybe negated."""

    field: Field
    lower: TimeBound | None
    lower_inclusive: bool
    upper: TimeBound | None
    upper_inclusive: bool
    negated: bool
    position: int
    raw: str


@dataclass(frozen=True, slots=True)
class TextTerm:
    """Free text: a word or a quoted phrase, matched case-insensitively as a substring."""

    text: str
    negated: bool
    quoted: bool
    position: int
    raw: str


Term = StatusFilter | ValueFilter | NumberFilter | TimeFilter | TextTerm


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A parsed search: every term must hold."""

    terms: tuple[Term, ...]
    source: str

    @property
    def is_empty(self) -> bool:
        """True when the query has no terms (matches every issue)."""
        return not self.terms


def parse_search(query: str | None) -> SearchQuery:
    """Parse a search string; raise :class:`SearchSyntaxError` on malformed input."""
    if not query:
        return SearchQuery((), "")
    check_text(query, what="search query", max_chars=MAX_QUERY_CHARS)
    return SearchQuery(tuple(_Parser(query).terms()), query)


def check_text(value: str, *, what: str, max_chars: int) -> None:
    """Refuse text PostgreSQL cannot store or that is absurdly long, as a validation error.

    NUL characters and lone surrogates would otherwise surface as database or encoding errors.
    """
    if len(value) > max_chars:
        raise QueryValidationError(f"{what} is longer than {max_chars} characters")
    if "\x00" in value:
        raise QueryValidationError(f"{what} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise QueryValidationError(f"{what} is not valid Unicode text") from exc


def like_escape(text: str) -> str:
    """``text`` with the ``LIKE`` metacharacters ``\\``, ``%`` and ``_`` escaped by backslashes."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class _Parser:
    """A hand-written scanner: the grammar is small and errors must say exactly where."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def terms(self) -> list[Term]:
        found: list[Term] = []
        text = self.text
        while True:
            while self.pos < len(text) and text[self.pos].isspace():
                self.pos += 1
            if self.pos >= len(text):
                return found
            if len(found) == MAX_TERMS:
                raise SearchSyntaxError(
                    f"more than {MAX_TERMS} terms", position=self.pos, token=self._word_at(self.pos)
                )
            found.append(self._term())

    def _term(self) -> Term:
        text = self.text
        start = self.pos
        negated = False
        # "-x" and "!x" negate; a lone "-" or a run like "--" is text.
        if text[start] in "!-" and start + 1 < len(text) and not (text[start + 1].isspace() or text[start + 1] in "!-"):
            negated = True
            self.pos += 1
        match = _KEY_RE.match(text, self.pos)
        if match is not None:
            if match.group("bracketed") is not None:
                self.pos = match.end()
                return self._value_filter(Field.TAG, match.group("bracketed"), negated, start)
            key = match.group("key")
            lowered = key.lower()
            if lowered.startswith(("tag.", "tags.")) and len(key) > key.index(".") + 1:
                self.pos = match.end()
                return self._value_filter(Field.TAG, key[key.index(".") + 1 :], negated, start)
            field = KEYS.get(lowered)
            if field is not None:
                self.pos = match.end()
                if field is Field.STATUS:
                    return self._status_filter(negated, start)
                if field in (Field.EVENTS, Field.USERS):
                    return self._number_filter(field, negated, start)
                if field in (Field.FIRST_SEEN, Field.LAST_SEEN):
                    return self._time_filter(field, negated, start)
                return self._value_filter(field, None, negated, start)
        if self.pos < len(text) and text[self.pos] == '"':
            phrase = self._quoted()
            return TextTerm(phrase, negated, True, start, text[start : self.pos])
        word = self._bare()
        if word in ("OR", "AND") and not negated:
            raise SearchSyntaxError(
                "boolean operators are not supported; terms are always combined with AND",
                position=start,
                token=word,
            )
        return TextTerm(word, negated, False, start, text[start : self.pos])

    # ---- values

    def _status_filter(self, negated: bool, start: int) -> StatusFilter:
        statuses: list[Status] = []
        for raw, position, _ in self._values(start):
            name = raw.lower()
            try:
                status = _STATUS_ALIASES.get(name) or Status(name)
            except ValueError:
                raise SearchSyntaxError(
                    f"unknown status; use one of {', '.join(s.value for s in Status)}",
                    position=position,
                    token=raw,
                ) from None
            statuses.append(status)
        return StatusFilter(tuple(statuses), negated, start, self.text[start : self.pos])

    def _value_filter(self, field: Field, tag: str | None, negated: bool, start: int) -> ValueFilter:
        if tag is not None:
            check_text(tag, what="tag key", max_chars=200)
        operator = self._operator()
        if operator is not None:
            if operator is not Op.NE:
                raise SearchSyntaxError(
                    f"the operator {operator.value} does not apply to {field.value}; "
                    "text values only match (or, negated, do not match)",
                    position=self.pos - len(operator.value),
                    token=operator.value,
                )
            negated = not negated
        values = tuple(_match(raw, quoted) for raw, _, quoted in self._values(start))
        return ValueFilter(field, values, negated, start, self.text[start : self.pos], tag)

    def _number_filter(self, field: Field, negated: bool, start: int) -> NumberFilter:
        op = self._operator() or Op.EQ
        position = self.pos
        raw = self._bare()
        match = _NUMBER_RE.fullmatch(raw)
        if not raw or match is None:
            raise SearchSyntaxError(
                f"{field.value} needs a number, like {field.value}:>100", position=position, token=raw
            )
        digits, suffix = match.group("digits"), (match.group("suffix") or "").lower()
        if "." in digits and not suffix:
            raise SearchSyntaxError(f"{field.value} counts are whole numbers", position=position, token=raw)
        whole, _, fraction = digits.partition(".")
        scale = _NUMBER_SUFFIX.get(suffix, 1)
        if len(whole) > 19:
            raise SearchSyntaxError("number too large", position=position, token=raw)
        value = int(whole) * scale + (int(fraction) * scale // 10 ** len(fraction) if fraction else 0)
        if value > MAX_NUMBER:
            raise SearchSyntaxError("number too large", position=position, token=raw)
        if negated:
            op = _NEGATED[op]
        return NumberFilter(field, op, value, start, self.text[start : self.pos])

    def _time_filter(self, field: Field, negated: bool, start: int) -> TimeFilter:
        op = self._operator()
        position = self.pos
        raw = self._bare()
        if op is Op.NE:
            negated, op = not negated, None
        if not raw:
            raise SearchSyntaxError(
                f"{field.value} needs a time, like {field.value}:-24h or {field.value}:>2024-05-01",
                position=position,
                token=raw,
            )
        duration = _DURATION_RE.fullmatch(raw)
        if duration is not None:
            sign = duration.group("sign")
            if sign and op not in (None, Op.EQ):
                raise SearchSyntaxError(
                    "use either a sign (-24h: within, +24h: longer ago) or an operator (>24h: longer ago), not both",
                    position=position,
                    token=raw,
                )
            seconds = int(duration.group("amount")) * _UNIT_SECONDS[duration.group("unit").lower()]
            if seconds > MAX_AGE.total_seconds():
                raise SearchSyntaxError("relative time too large", position=position, token=raw)
            ago = TimeBound(ago=timedelta(seconds=seconds))
            # The value is an age: a larger age is an earlier time, so > on the age is < on time.
            bounds: _Bounds = {
                None: (ago, True, None, False),
                Op.EQ: (ago, True, None, False),
                Op.LT: (ago, False, None, False),
                Op.LE: (ago, True, None, False),
                Op.GT: (None, False, ago, False),
                Op.GE: (None, False, ago, True),
            }[op]
            if sign == "+":
                bounds = (None, False, ago, False)
            return TimeFilter(field, *bounds, negated, start, self.text[start : self.pos])
        if _DATE_RE.fullmatch(raw):
            day = self._datetime(raw + "T00:00:00+00:00", position, raw)
            point = TimeBound(at=day)
            if op in (None, Op.EQ):
                try:
                    end = TimeBound(at=day + timedelta(days=1))
                except OverflowError as exc:
                    raise SearchSyntaxError("date out of range", position=position, token=raw) from exc
                return TimeFilter(field, point, True, end, False, negated, start, self.text[start : self.pos])
        elif _DATETIME_RE.fullmatch(raw):
            point = TimeBound(at=self._datetime(raw, position, raw))
            if op in (None, Op.EQ):
                raise SearchSyntaxError(
                    "compare a date and time with >, >=, < or <= (a bare date means that whole UTC day)",
                    position=position,
                    token=raw,
                )
        else:
            raise SearchSyntaxError(
                f"{field.value} needs a relative time (-24h, +7d, >30m) or an ISO date (2024-05-01[T12:00:00Z])",
                position=position,
                token=raw,
            )
        point_bounds: _Bounds = {
            Op.GT: (point, False, None, False),
            Op.GE: (point, True, None, False),
            Op.LT: (None, False, point, False),
            Op.LE: (None, False, point, True),
        }[op]
        return TimeFilter(field, *point_bounds, negated, start, self.text[start : self.pos])

    @staticmethod
    def _datetime(text: str, position: int, token: str) -> datetime:
        try:
            value = datetime.fromisoformat(text.replace(" ", "T", 1))
        except ValueError as exc:
            raise SearchSyntaxError(f"not a valid date: {exc}", position=position, token=token) from exc
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError as exc:
            raise SearchSyntaxError("date out of range", position=position, token=token) from exc

    def _operator(self) -> Op | None:
        match = _OPERATOR_RE.match(self.text, self.pos)
        if match is None:
            return None
        self.pos = match.end()
        return Op(match.group())

    def _values(self, start: int) -> list[tuple[str, int, bool]]:
        """The value (or ``[list]`` of values) at the cursor: (text, position, quoted) each."""
        text = self.text
        if self.pos < len(text) and text[self.pos] == "[":
            return self._list(start)
        position = self.pos
        if self.pos < len(text) and text[self.pos] == '"':
            return [(self._quoted(keep_escapes=True), position, True)]
        raw = self._bare()
        if not raw:
            raise SearchSyntaxError(
                'missing value (write key:value, or key:"" for an empty value)',
                position=start,
                token=text[start : self.pos],
            )
        return [(raw, position, False)]

    def _list(self, start: int) -> list[tuple[str, int, bool]]:
        text = self.text
        self.pos += 1  # [
        values: list[tuple[str, int, bool]] = []
        while True:
            while self.pos < len(text) and text[self.pos] == " ":
                self.pos += 1
            if self.pos >= len(text):
                raise SearchSyntaxError("unterminated list: missing ]", position=start, token=text[start:])
            position = self.pos
            if text[self.pos] == '"':
                values.append((self._quoted(keep_escapes=True, followers=",]"), position, True))
            else:
                end = self.pos
                while end < len(text) and text[end] not in ",] \t\r\n":
                    end += 1
                if end == self.pos:
                    raise SearchSyntaxError("empty value in list", position=position, token=text[start : end + 1])
                values.append((text[self.pos : end], position, False))
                self.pos = end
            while self.pos < len(text) and text[self.pos] == " ":
                self.pos += 1
            if self.pos >= len(text):
                raise SearchSyntaxError("unterminated list: missing ]", position=start, token=text[start:])
            if len(values) > MAX_LIST_VALUES:
                raise SearchSyntaxError(f"more than {MAX_LIST_VALUES} values in a list", position=start, token="[")
            if self.pos < len(text) and text[self.pos] == ",":
                self.pos += 1
                continue
            if self.pos < len(text) and text[self.pos] == "]":
                self.pos += 1
                if self.pos < len(text) and not text[self.pos].isspace():
                    raise SearchSyntaxError(
                        "expected a space after ]", position=self.pos, token=self._word_at(self.pos)
                    )
                return values
            raise SearchSyntaxError(
                "expected , or ] in a list", position=self.pos, token=self._word_at(self.pos) or text[start:]
            )

    def _quoted(self, *, keep_escapes: bool = False, followers: str = "") -> str:
        """The quoted string at the cursor. ``\\"`` is a quote and ``\\\\`` a backslash; other
        backslashes are kept, and with ``keep_escapes`` those two are kept too, for
        :func:`_match` to decode together with ``\\*``."""
        text = self.text
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while self.pos < len(text):
            char = text[self.pos]
            if char == "\\" and self.pos + 1 < len(text) and text[self.pos + 1] in '"\\':
                out.append(text[self.pos : self.pos + 2] if keep_escapes else text[self.pos + 1])
                self.pos += 2
                continue
            if char == '"':
                self.pos += 1
                if self.pos < len(text) and not text[self.pos].isspace() and text[self.pos] not in followers:
                    raise SearchSyntaxError(
                        "expected a space after the closing quote", position=self.pos, token=self._word_at(self.pos)
                    )
                return "".join(out)
            out.append(char)
            self.pos += 1
        raise SearchSyntaxError("unterminated quote", position=start, token=text[start:])

    def _bare(self) -> str:
        """The run of non-space characters at the cursor."""
        start = self.pos
        text = self.text
        while self.pos < len(text) and not text[self.pos].isspace():
            self.pos += 1
        return text[start : self.pos]

    def _word_at(self, position: int) -> str:
        end = position
        while end < len(self.text) and not self.text[end].isspace():
            end += 1
        return self.text[position:end]


def _match(raw: str, quoted: bool) -> Match:
    """Decode a filter value: ``*`` is a wildcard, ``\\*`` a star, ``\\\\`` a backslash, and in
    quoted values ``\\"`` a quote."""
    literal: list[str] = []
    pattern: list[str] = []
    wildcard = False
    index = 0
    while index < len(raw):
        char = raw[index]
        nxt = raw[index + 1] if index + 1 < len(raw) else ""
        if char == "\\" and nxt and (nxt in "*\\" or (quoted and nxt == '"')):
            literal.append(nxt)
            pattern.append(like_escape(nxt))
            index += 2
            continue
        if char == "*":
            wildcard = True
            pattern.append("%")
        else:
            literal.append(char)
            pattern.append(like_escape(char))
        index += 1
    return Match("".join(pattern), True) if wildcard else Match("".join(literal))
