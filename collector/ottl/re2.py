"""RE2 patterns (Go ``regexp`` syntax) translated to Python ``re``.

OTTL's ``IsMatch`` uses Go's ``regexp.MatchString``: RE2 syntax, unanchored search. Python's
``re`` reads most of that syntax the same way but not all of it, so patterns are parsed here
and written out again with the RE2 meaning made explicit:

* ``\\d \\s \\w \\b`` are ASCII-only in RE2 (``\\s`` is ``[\\t\\n\\f\\r ]``, without ``\\v``);
* ``$`` without the ``m`` flag matches only at the very end of the text (Python's ``$`` also
  matches before a final newline), ``\\z`` is the end of text;
* flags set mid-group, ``(?i)abc``, apply to the rest of the group; ``(?U)`` swaps greedy and
  lazy repetition; ``(?<name>re)`` is a named group;
* ``[[:alpha:]]`` POSIX classes, ``\\Q...\\E`` quoting, ``\\x{10FFFF}`` escapes;
* ``{`` that does not start a valid repetition is a literal (``a{,3}`` matches the text
  ``a{,3}``); repetition counts are at most 1000.

Constructs RE2 refuses are refused here too, with a message saying why: backreferences
(``\\1``), lookahead and lookbehind, atomic groups, possessive or nested repetition, and
``\\p{...}`` Unicode classes (which Python's ``re`` cannot express either).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_MAX_CODE = 0x10FFFF
_MAX_REPEAT = 1000

_PERL_CLASSES: dict[str, list[tuple[int, int]]] = {
    "d": [(0x30, 0x39)],
    "s": [(0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20)],
    "w": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
}

_POSIX_CLASSES: dict[str, list[tuple[int, int]]] = {
    "alnum": [(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)],
    "alpha": [(0x41, 0x5A), (0x61, 0x7A)],
    "ascii": [(0x00, 0x7F)],
    "blank": [(0x09, 0x09), (0x20, 0x20)],
    "cntrl": [(0x00, 0x1F), (0x7F, 0x7F)],
    "digit": [(0x30, 0x39)],
    "graph": [(0x21, 0x7E)],
    "lower": [(0x61, 0x7A)],
    "print": [(0x20, 0x7E)],
    "punct": [(0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)],
    "space": [(0x09, 0x0D), (0x20, 0x20)],
    "upper": [(0x41, 0x5A)],
    "word": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    "xdigit": [(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
}

_SIMPLE_ESCAPES = {"a": 0x07, "f": 0x0C, "t": 0x09, "n": 0x0A, "r": 0x0D, "v": 0x0B}

_WORD = "[0-9A-Za-z_]"
_WORD_BOUNDARY = f"(?:(?<={_WORD})(?!{_WORD})|(?<!{_WORD})(?={_WORD}))"
_NOT_WORD_BOUNDARY = f"(?:(?<={_WORD})(?={_WORD})|(?<!{_WORD})(?!{_WORD}))"


class RE2Error(ValueError):
    """The pattern is not valid RE2, or uses what AppGuard cannot translate."""


@dataclass
class _Flags:
    i: bool = False
    m: bool = False
    s: bool = False
    U: bool = False

    def copy(self) -> _Flags:
        return _Flags(self.i, self.m, self.s, self.U)


def _negate(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    nxt = 0
    for lo, hi in _normalize(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= _MAX_CODE:
        out.append((nxt, _MAX_CODE))
    return out


def _normalize(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def _class_text(ranges: list[tuple[int, int]]) -> str:
    ranges = _normalize(ranges)
    if not ranges:
        return "(?!)"  # an empty class matches nothing
    parts = []
    for lo, hi in ranges:
        if lo == hi:
            parts.append(_class_char(lo))
        else:
            parts.append(f"{_class_char(lo)}-{_class_char(hi)}")
    return "[" + "".join(parts) + "]"


def _class_char(code: int) -> str:
    # Escaping every character in a class keeps Python from reading '[', '-', '&&'... specially.
    if code < 0x80 and chr(code).isalnum():
        return chr(code)
    return f"\\U{code:08x}" if code > 0xFFFF else f"\\u{code:04x}" if code > 0xFF else f"\\x{code:02x}"


def _literal(code: int) -> str:
    ch = chr(code)
    if ch.isalnum() or ch == "_":
        return ch
    return _class_char(code)


class _Translator:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0

    def fail(self, message: str) -> RE2Error:
        return RE2Error(f"{message} (at offset {self.i} of {self.p!r})")

    def more(self) -> bool:
        return self.i < len(self.p)

    def translate(self) -> str:
        out = self.alternation(_Flags(), top=True)
        if self.more():
            raise self.fail("unexpected )")
        return out

    def alternation(self, flags: _Flags, top: bool = False) -> str:
        branches = []
        while True:
            text, flags = self.sequence(flags)
            branches.append(text)
            if self.more() and self.p[self.i] == "|":
                self.i += 1
                continue
            break
        if self.more() and self.p[self.i] == ")" and top:
            raise self.fail("unexpected )")
        return "|".join(branches)

    def sequence(self, flags: _Flags) -> tuple[str, _Flags]:
        parts: list[str] = []
        last_repeatable = False
        while self.more():
            c = self.p[self.i]
            if c in "|)":
                break
            if c in "*+?{":
                repeat = self.repetition(flags)
                if repeat is None:  # a '{' that is not a repetition is a literal
                    self.i += 1
                    parts.append(_literal(ord("{")))
                    last_repeatable = True
                    continue
                if not parts or not last_repeatable:
                    raise self.fail("missing argument to repetition operator")
                parts[-1] = f"(?:{parts[-1]}){repeat}"
                last_repeatable = False
                if self.more() and (self.p[self.i] in "*+?" or (self.p[self.i] == "{" and self.peek_repetition())):
                    raise self.fail("invalid nested repetition operator (possessive or double repetition)")
                continue
            if c == "(":
                group = self.group(flags)
                if isinstance(group, _Flags):  # (?flags) applies to the rest of this group
                    flags = group
                    last_repeatable = False
                    continue
                parts.append(group)
            else:
                parts.append(self.atom(flags))
            last_repeatable = True
        return "".join(parts), flags

    def peek_repetition(self) -> bool:
        return re.match(r"\{\d+(?:,\d*)?\}", self.p[self.i :]) is not None

    def repetition(self, flags: _Flags) -> str | None:
        c = self.p[self.i]
        if c == "{":
            m = re.match(r"\{(\d+)(,(\d*))?\}", self.p[self.i :])
            if m is None:
                return None
            lo = int(m.group(1))
            hi = None if m.group(2) and not m.group(3) else int(m.group(3)) if m.group(3) else lo
            if lo > _MAX_REPEAT or (hi is not None and (hi > _MAX_REPEAT or hi < lo)):
                raise self.fail("invalid repeat count")
            self.i += m.end()
            op = f"{{{lo}}}" if hi == lo and not m.group(2) else f"{{{lo},{'' if hi is None else hi}}}"
        else:
            self.i += 1
            op = c
        lazy = False
        if self.more() and self.p[self.i] == "?":
            self.i += 1
            lazy = True
        if flags.U:
            lazy = not lazy
        return op + ("?" if lazy else "")

    def group(self, flags: _Flags) -> str | _Flags:
        start = self.i
        self.i += 1
        inner_flags = flags.copy()
        if self.p.startswith("?", self.i):
            rest = self.p[self.i + 1 :]
            if rest.startswith("P<") or rest.startswith("<"):
                if rest.startswith("<=") or rest.startswith("<!"):
                    raise self.fail("lookbehind assertions are not supported by RE2")
                skip = 3 if rest.startswith("P<") else 2
                end = self.p.find(">", self.i + skip)
                name = self.p[self.i + skip : end] if end != -1 else ""
                if end == -1 or not re.fullmatch(r"[A-Za-z0-9_]+", name):
                    raise self.fail("invalid named capture")
                self.i = end + 1
            elif rest[:1] in ("=", "!"):
                raise self.fail("lookahead assertions are not supported by RE2")
            elif rest[:1] == ">":
                raise self.fail("atomic groups are not supported by RE2")
            elif rest[:1] in ("#", "("):
                raise self.fail("comments and conditionals are not supported by RE2")
            else:
                m = re.match(r"([imsU]*)(?:-([imsU]*))?([:)])", rest)
                if m is None or (m.group(2) is not None and not m.group(2)) or (not m.group(1) and m.group(2) is None and m.group(3) == ")"):
                    raise self.fail("invalid or unsupported group flags")
                for f in m.group(1):
                    setattr(inner_flags, f, True)
                for f in m.group(2) or "":
                    setattr(inner_flags, f, False)
                self.i += 1 + m.end()
                if m.group(3) == ")":
                    return inner_flags
        body = self.alternation(inner_flags)
        if not self.more() or self.p[self.i] != ")":
            self.i = start
            raise self.fail("missing closing )")
        self.i += 1
        # Capturing groups are not needed to answer "does it match": every group is written
        # as a non-capturing one, which also sidesteps Python's group-name rules.
        return f"(?:{body})"

    def atom(self, flags: _Flags) -> str:
        c = self.p[self.i]
        if c == ".":
            self.i += 1
            return "(?s:.)" if flags.s else "[^\\n]"
        if c == "^":
            self.i += 1
            return "(?m:^)" if flags.m else "(?:\\A)"
        if c == "$":
            self.i += 1
            return "(?m:$)" if flags.m else "(?:\\Z)"
        if c == "[":
            return self.fold(self.char_class(), flags)
        if c == "\\":
            return self.escape(flags)
        self.i += 1
        return self.fold(_literal(ord(c)), flags)

    @staticmethod
    def fold(text: str, flags: _Flags) -> str:
        return f"(?i:{text})" if flags.i else text

    def escape(self, flags: _Flags) -> str:
        if self.i + 1 >= len(self.p):
            raise self.fail("trailing backslash at end of expression")
        c = self.p[self.i + 1]
        if c == "Q":
            end = self.p.find("\\E", self.i + 2)
            text = self.p[self.i + 2 :] if end == -1 else self.p[self.i + 2 : end]
            self.i = len(self.p) if end == -1 else end + 2
            return self.fold("".join(_literal(ord(ch)) for ch in text), flags) if text else ""
        if c == "A":
            self.i += 2
            return "(?:\\A)"
        if c == "z":
            self.i += 2
            return "(?:\\Z)"
        if c == "b":
            self.i += 2
            return _WORD_BOUNDARY
        if c == "B":
            self.i += 2
            return _NOT_WORD_BOUNDARY
        if c in "dswDSW":
            self.i += 2
            ranges = _PERL_CLASSES[c.lower()]
            return _class_text(_negate(ranges) if c.isupper() else ranges)
        if c in "pP":
            raise self.fail("Unicode classes (\\p, \\P) are not supported by AppGuard's IsMatch")
        if c == "C":
            raise self.fail("\\C (any byte) is not supported")
        return self.fold(_literal(self.char_escape()), flags)

    def char_escape(self) -> int:
        """Read an escape that stands for one character; ``self.i`` is at the backslash."""
        c = self.p[self.i + 1]
        if c in _SIMPLE_ESCAPES:
            self.i += 2
            return _SIMPLE_ESCAPES[c]
        if c == "x":
            m = re.match(r"\{([0-9a-fA-F]+)\}|([0-9a-fA-F]{2})", self.p[self.i + 2 :])
            if m is None:
                raise self.fail("invalid escape sequence \\x")
            code = int(m.group(1) or m.group(2), 16)
            if code > _MAX_CODE:
                raise self.fail("invalid escape sequence: code point out of range")
            self.i += 2 + m.end()
            return code
        if c in "1234567" and not (self.i + 2 < len(self.p) and self.p[self.i + 2] in "01234567"):
            raise self.fail("backreferences are not supported by RE2")
        if c in "01234567":
            m = re.match(r"[0-7]{1,3}", self.p[self.i + 1 :])
            assert m is not None
            self.i += 1 + m.end()
            return int(m.group(), 8)
        if c in "89":
            raise self.fail("backreferences are not supported by RE2")
        if ord(c) < 0x80 and not c.isalnum() and c != "_":
            self.i += 2
            return ord(c)
        raise self.fail(f"invalid escape sequence \\{c}")

    def char_class(self) -> str:
        start = self.i
        self.i += 1
        negated = False
        if self.more() and self.p[self.i] == "^":
            negated = True
            self.i += 1
        ranges: list[tuple[int, int]] = []
        first = True
        while True:
            if not self.more():
                self.i = start
                raise self.fail("missing closing ]")
            c = self.p[self.i]
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            if c == "[" and self.p.startswith("[:", self.i):
                m = re.match(r"\[:(\^?)([a-z]+):\]", self.p[self.i :])
                if m and m.group(2) in _POSIX_CLASSES:
                    cls = _POSIX_CLASSES[m.group(2)]
                    ranges.extend(_negate(cls) if m.group(1) else cls)
                    self.i += m.end()
                    continue
                if m:
                    raise self.fail(f"invalid character class range [:{m.group(2)}:]")
            if c == "\\" and self.i + 1 < len(self.p) and self.p[self.i + 1] in "dswDSW":
                cls = _PERL_CLASSES[self.p[self.i + 1].lower()]
                ranges.extend(_negate(cls) if self.p[self.i + 1].isupper() else cls)
                self.i += 2
                continue
            if c == "\\" and self.i + 1 < len(self.p) and self.p[self.i + 1] in "pP":
                raise self.fail("Unicode classes (\\p, \\P) are not supported by AppGuard's IsMatch")
            lo = self.class_char()
            hi = lo
            if self.p.startswith("-", self.i) and self.i + 1 < len(self.p) and self.p[self.i + 1] != "]":
                self.i += 1
                hi = self.class_char()
                if hi < lo:
                    raise self.fail("invalid character class range")
            ranges.append((lo, hi))
        return _class_text(_negate(ranges) if negated else ranges)

    def class_char(self) -> int:
        if not self.more():
            raise self.fail("missing closing ]")
        c = self.p[self.i]
        if c == "\\":
            if self.i + 1 >= len(self.p):
                raise self.fail("trailing backslash at end of expression")
            return self.char_escape()
        self.i += 1
        return ord(c)


def translate(pattern: str) -> str:
    """The Python ``re`` source equivalent to RE2 ``pattern``; :class:`RE2Error` if invalid."""
    return _Translator(pattern).translate()


def compile_re2(pattern: str) -> re.Pattern[str]:
    """Compile an RE2 pattern for unanchored ``search``, like Go's ``MatchString``."""
    source = translate(pattern)
    try:
        return re.compile(source)
    except re.error as exc:  # a translation gap: report it as the user's pattern problem
        raise RE2Error(f"cannot compile {pattern!r}: {exc}") from None
