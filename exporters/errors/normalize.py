"""Message parameterization: replace the variable parts of an error message by placeholders.

Two messages that differ only in ids, numbers, addresses or timestamps (``order 1234 not
found`` / ``order 98 not found``) must give the same text, so that events without a usable
stack trace still group. The replacements, in the order they are tried at one position:

``<url>`` ``<email>`` ``<uuid>`` ``<date>`` ``<ip>`` ``<duration>`` ``<hex>`` ``<float>`` ``<int>``
(and ``<str>`` for quoted strings when asked for).

All patterns are joined into one compiled regular expression and applied in a single pass;
none has nested quantifiers over overlapping classes, so the work stays linear in the input.
"""

from __future__ import annotations

import re

#: Grouping looks at this many leading characters of a message; the rest never changes a hash.
MAX_MESSAGE_CHARS = 1024

_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_WEEKDAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_H16 = r"[0-9a-fA-F]{1,4}"

# Each alternative is a named group; the group's name is the placeholder.
_PATTERNS: tuple[tuple[str, str], ...] = (
    (
        "url",
        r"\b(?:https?|wss?|ftp|file|postgres(?:ql)?|mysql|redis|rediss|amqps?|mongodb(?:\+srv)?|grpcs?)://[^\s\"'<>()\[\]{}]+",
    ),
    ("email", r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+\b"),
    ("uuid", r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"),
    (
        "date",
        # ISO 8601 / RFC 3339 date, optionally with a time, fraction and zone.
        r"\b\d{4}-[01]\d-[0-3]\d(?:[T ][0-2]\d:[0-5]\d(?::[0-5]\d(?:[.,]\d+)?)?(?:Z|[+-][0-2]\d:?[0-5]\d)?)?(?![\w:])"
        # RFC 1123 (HTTP dates) and the C/JavaScript Date.toString forms.
        rf"|\b(?:{_WEEKDAY},? )?(?:[0-3]?\d {_MONTH} \d{{4}}|{_MONTH} [0-3]?\d,? \d{{4}})(?: [0-2]\d:[0-5]\d(?::[0-5]\d)?)?(?: (?:GMT|UTC|[+-]\d{{4}}))?\b"
        # A bare wall-clock time.
        r"|\b[0-2]\d:[0-5]\d:[0-5]\d(?:\.\d+)?\b",
    ),
    (
        "ip",
        r"\b(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}(?::\d{1,5})?\b"
        # IPv6: full form, or compressed with '::' somewhere. The look-arounds keep Ruby's and
        # C++'s ``Foo::Bar`` and clock times out.
        rf"|(?<![\w:.])(?:{_H16}:){{7}}{_H16}(?![\w:])"
        rf"|(?<![\w:.])(?:{_H16}:){{1,6}}:(?:{_H16}(?::{_H16}){{0,5}})?(?![\w:])"
        rf"|(?<![\w:])::(?:ffff:(?:\d{{1,3}}\.){{3}}\d{{1,3}}|{_H16}(?::{_H16}){{0,6}})?(?![\w:.])",
    ),
    (
        "duration",
        r"\b(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+\b"
        r"|\b\d+(?:\.\d+)? ?(?:milliseconds?|secs?|seconds?|mins?|minutes?|hours?)\b",
    ),
    (
        "hex",
        r"\b0[xX][0-9a-fA-F]+\b"
        # Unprefixed hex needs a digit and a letter (else it is an int or a word) and eight
        # characters or more, the length of an id rather than of a short word.
        r"|\b(?=[0-9a-f]*\d)(?=\d*[a-f])[0-9a-f]{8,}\b"
        r"|\b(?=[0-9A-F]*\d)(?=\d*[A-F])[0-9A-F]{8,}\b",
    ),
    ("float", r"(?<![\w.])-?\d+\.\d+(?!\.?\w)"),
    # Digits glued to letters (``user42``, ``v2``) are part of a name, and dotted versions
    # (``1.2.3``) are left whole.
    ("int", r"(?<![\w.])-?\d+\b(?!\.\d)"),
)

_COMBINED = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in _PATTERNS))
_QUOTED = re.compile(r"'[^'\n]{1,200}'|\"[^\"\n]{1,200}\"")
# A message with none of these characters has nothing to replace: skip the big expression.
_MAY_HAVE_PARAMS = re.compile(r"[\d@]|://")
_PLACEHOLDER = {name: f"<{name}>" for name, _ in _PATTERNS}


def _replace(match: re.Match[str]) -> str:
    return _PLACEHOLDER[match.lastgroup or "int"]


def grouping_text(message: str | None) -> str:
    """The part of a message that grouping considers: its first two non-blank lines, capped.

    Long multi-line messages (validation errors, SQL with its parameters) tend to carry
    event-specific detail further down; like mature trackers, only the head counts.
    """
    if not message:
        return ""
    head = message[: MAX_MESSAGE_CHARS * 2]
    if "\n" in head:
        lines = [line.strip() for line in head.splitlines() if line.strip()]
        head = "\n".join(lines[:2])
    else:
        head = head.strip()
    return head[:MAX_MESSAGE_CHARS]


def normalize_message(message: str | None, *, quoted: bool = False) -> str:
    """Replace the variable parts of ``message`` by placeholders such as ``<int>`` or ``<uuid>``.

    ``quoted=True`` also replaces quoted strings by ``'<str>'``; off by default because a quoted
    name (``relation "users" does not exist``) usually tells two bugs apart.
    """
    text = grouping_text(message)
    if not text:
        return ""
    if quoted:
        text = _QUOTED.sub(lambda m: m.group(0)[0] + "<str>" + m.group(0)[0], text)
    if _MAY_HAVE_PARAMS.search(text) is None:
        return text
    return _COMBINED.sub(_replace, text)
