"""RE2 patterns translated to Python ``re``: RE2 meanings kept, RE2-less constructs refused."""

from __future__ import annotations

import pytest

from collector.ottl import RE2Error, compile_re2


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        # IsMatch is an unanchored search
        ("grpc", "a grpc call", True),
        (".*grpc.*", "xx grpc yy", True),
        ("^GET", "GET /", True),
        ("^GET", "xGET", False),
        # $ is the end of the text only; (?m) makes it end of line
        ("abc$", "abc\n", False),
        ("abc$", "abc", True),
        ("(?m)abc$", "abc\nx", True),
        ("(?m)^x", "abc\nx", True),
        (r"\Aab", "ab", True),
        (r"ab\z", "ab", True),
        (r"ab\z", "ab\n", False),
        # Perl classes and \b are ASCII in RE2
        (r"\d+", "٤٢", False),
        (r"\d+", "42", True),
        (r"\w", "é", False),
        (r"\s", "\v", False),
        (r"\S", "\v", True),
        (r"\bfoo\b", "a foo b", True),
        (r"\bfoo\b", "afoo", False),
        (r"\Bfoo", "afoo", True),
        (r"[\d\s]", " ", True),
        (r"[^\d]", "5", False),
        # flags
        ("(?i)hello", "HeLLo", True),
        ("a(?i)b|c", "aB", True),
        ("a(?i)b|c", "C", True),
        ("(?i:a)b", "Ab", True),
        ("(?i:a)b", "AB", False),
        ("(?s).", "\n", True),
        (".", "\n", False),
        ("(?U)a+b", "aab", True),
        # repetition, and braces that are not repetition
        ("x{2}", "xx", True),
        ("x{2,}", "xxx", True),
        ("^x{1,2}$", "xxx", False),
        ("a{,3}", "a{,3}", True),
        ("a{,3}", "aaa", False),
        ("a{", "a{", True),
        # classes
        ("[[:alpha:]]+", "abc", True),
        ("[^[:digit:]]", "5", False),
        ("[[:^space:]]", " ", False),
        ("[]a]", "]", True),
        ("[^]a]", "b", True),
        ("[a-]", "-", True),
        ("[.]", "x", False),
        ("[^a]", "\n", True),
        # escapes and quoting
        (r"\Qa.b\E", "a.b", True),
        (r"\Qa.b\E", "axb", False),
        (r"\Qa.b", "a.b", True),
        (r"\x{41}\x42", "AB", True),
        (r"\101", "A", True),
        (r"\.", "x", False),
        (r"\t", "\t", True),
        # groups
        ("(?P<n>a)b", "ab", True),
        ("(?<n>a)b", "ab", True),
        ("(?:a|b)+c", "abac", True),
        ("^$", "", True),
        ("é+", "ééé", True),
        ("^*a", "a", True),
    ],
)
def test_matches_like_go(pattern: str, text: str, matches: bool) -> None:
    assert (compile_re2(pattern).search(text) is not None) is matches


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        (r"(a)\1", "backreferences"),
        (r"\8", "backreferences"),
        ("(?=a)", "lookahead"),
        ("(?!a)", "lookahead"),
        ("(?<=a)b", "lookbehind"),
        ("(?<!a)b", "lookbehind"),
        ("(?>a)", "atomic"),
        ("a*+", "nested repetition"),
        ("a**", "nested repetition"),
        ("a{2}{3}", "nested repetition"),
        (r"\pL", "Unicode classes"),
        (r"[\p{Greek}]", "Unicode classes"),
        ("a{1001}", "invalid repeat count"),
        ("a{3,2}", "invalid repeat count"),
        ("(", "missing closing )"),
        (")", "unexpected )"),
        ("[a", "missing closing ]"),
        ("\\", "trailing backslash"),
        (r"\k", "invalid escape"),
        ("*a", "missing argument"),
        ("(?#comment)", "comments"),
        ("[z-a]", "invalid character class range"),
        ("[[:nope:]]", "invalid character class range"),
        ("(?P<a-b>x)", "invalid named capture"),
        (r"\C", "any byte"),
    ],
)
def test_refuses_what_re2_refuses(pattern: str, fragment: str) -> None:
    with pytest.raises(RE2Error) as info:
        compile_re2(pattern)
    assert fragment in str(info.value)
    assert repr(pattern) in str(info.value)
