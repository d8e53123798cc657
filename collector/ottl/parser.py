"""Tokenizer and recursive-descent parser for OTTL conditions.

The grammar is the boolean-expression part of the stock OTTL grammar (``pkg/ottl/grammar.go``):

    condition  := term ("or" term)*
    term       := boolean ("and" boolean)*
    boolean    := "not"? ( comparison | "true" | "false" | Converter(...) | "(" condition ")" )
    comparison := value ("==" | "!=" | "<" | "<=" | ">" | ">=") value
    value      := nil | string | int | float | bool | 0xBYTES | ENUM | path | Converter(...) | [list]

so ``not`` binds tightest, then ``and``, then ``or``. Tokens follow the stock lexer: an int or
float may carry a sign (``-1``, ``+.5``), strings are double quoted with Go escapes, byte
slices are ``0x`` and hex digits, paths are lower-case identifiers joined by dots with
``["key"]``/``[0]`` indexes, converters start with an upper-case letter and enums are
all upper case. Math expressions, map literals and indexing a converter's result are refused
with an error that says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from collector.ottl.ast import (
    And,
    Argument,
    BoolConst,
    BoolExpr,
    Call,
    Comparison,
    Enum,
    ListValue,
    Literal,
    Not,
    Or,
    OTTLError,
    Path,
    Segment,
    Value,
)

# Order matters, as in the stock lexer: the first rule that matches at a position wins.
_TOKEN_RULES = [
    ("BYTES", r"0x[a-fA-F0-9]+"),
    ("FLOAT", r"[-+]?\d*\.\d+(?:[eE][-+]?\d+)?"),
    ("INT", r"[-+]?\d+"),
    ("STRING", r'"(?:\\.|[^\\"])*"'),
    ("NOT", r"\bnot\b"),
    ("OR", r"\bor\b"),
    ("AND", r"\band\b"),
    ("CMP", r"==|!=|>=|<=|>|<"),
    ("MATH", r"[-+*/]"),
    ("BOOL", r"\b(?:true|false)\b"),
    ("EQUAL", r"="),
    ("LPAREN", r"\("),
    ("RPAREN", r"\)"),
    ("LBRACE", r"\{"),
    ("RBRACE", r"\}"),
    ("COLON", r":"),
    ("COMMA", r","),
    ("DOT", r"\."),
    ("LBRACK", r"\["),
    ("RBRACK", r"\]"),
    ("IDENT", r"[A-Za-z][A-Za-z0-9_]*"),
    ("WS", r"\s+"),
]
_TOKEN_RE = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in _TOKEN_RULES))
_ENUM_RE = re.compile(r"[A-Z][A-Z0-9_]*\Z")
_LOWER_RE = re.compile(r"[a-z][a-z0-9_]*\Z")
_EDITOR_RE = re.compile(r"[a-z][A-Za-z0-9_]*\Z")

_DESCRIBE = {
    "BYTES": "a byte slice",
    "FLOAT": "a float",
    "INT": "an int",
    "STRING": "a string",
    "NOT": "'not'",
    "OR": "'or'",
    "AND": "'and'",
    "CMP": "a comparison operator",
    "MATH": "a math operator",
    "BOOL": "a boolean",
    "EQUAL": "'='",
    "LPAREN": "'('",
    "RPAREN": "')'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "COLON": "':'",
    "COMMA": "','",
    "DOT": "'.'",
    "LBRACK": "'['",
    "RBRACK": "']'",
    "IDENT": "a name",
    "EOF": "the end of the condition",
}


@dataclass
class Token:
    kind: str
    text: str
    col: int

    def describe(self) -> str:
        if self.kind == "EOF":
            return _DESCRIBE["EOF"]
        return f"{_DESCRIBE[self.kind]} {self.text!r}" if self.kind in ("IDENT", "CMP", "MATH") else _DESCRIBE[self.kind]


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens (whitespace dropped), ending with an EOF token."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise OTTLError(f"unexpected character {text[pos]!r}", pos + 1)
        kind = m.lastgroup
        assert kind is not None
        if kind != "WS":
            tokens.append(Token(kind, m.group(), pos + 1))
        pos = m.end()
    tokens.append(Token("EOF", "", len(text) + 1))
    return tokens


_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"'}


def unquote(token: str, col: int) -> str:
    """The value of a double-quoted string literal, with Go's escape sequences."""
    body = token[1:-1]
    if "\\" not in body:
        return body
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        esc = body[i + 1]
        where = col + 1 + i
        if esc in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[esc].encode()
            i += 2
        elif esc == "x":
            digits = body[i + 2 : i + 4]
            if not re.fullmatch(r"[0-9a-fA-F]{2}", digits):
                raise OTTLError("invalid \\x escape in string: two hex digits are needed", where)
            out.append(int(digits, 16))
            i += 4
        elif esc in "01234567":
            digits = body[i + 1 : i + 4]
            if not re.fullmatch(r"[0-7]{3}", digits) or int(digits, 8) > 255:
                raise OTTLError("invalid octal escape in string: three octal digits up to \\377 are needed", where)
            out.append(int(digits, 8))
            i += 4
        elif esc in "uU":
            n = 4 if esc == "u" else 8
            digits = body[i + 2 : i + 2 + n]
            if not re.fullmatch(f"[0-9a-fA-F]{{{n}}}", digits):
                raise OTTLError(f"invalid \\{esc} escape in string: {n} hex digits are needed", where)
            code = int(digits, 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise OTTLError(f"invalid \\{esc} escape in string: not a valid code point", where)
            out += chr(code).encode()
            i += 2 + n
        else:
            raise OTTLError(f"invalid escape sequence \\{esc} in string", where)
    # \x and octal escapes give raw bytes, as in Go; invalid UTF-8 is kept, not refused.
    return out.decode("utf-8", "surrogateescape")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.pos = 0

    def peek(self, offset: int = 0) -> Token:
        return self.tokens[min(self.pos + offset, len(self.tokens) - 1)]

    def next(self) -> Token:
        tok = self.tokens[self.pos]
        if tok.kind != "EOF":
            self.pos += 1
        return tok

    def expect(self, kind: str, what: str) -> Token:
        tok = self.peek()
        if tok.kind != kind:
            raise OTTLError(f"expected {what} but found {tok.describe()}", tok.col)
        return self.next()

    # -- boolean expressions -------------------------------------------------------------

    def condition(self) -> BoolExpr:
        expr = self.or_expr()
        tok = self.peek()
        if tok.kind != "EOF":
            raise OTTLError(f"unexpected {tok.describe()} after a complete condition (missing 'and'/'or'?)", tok.col)
        return expr

    def or_expr(self) -> BoolExpr:
        first = self.and_expr()
        operands = [first]
        while self.peek().kind == "OR":
            self.next()
            operands.append(self.and_expr())
        return first if len(operands) == 1 else Or(operands, _col(first))

    def and_expr(self) -> BoolExpr:
        first = self.boolean()
        operands = [first]
        while self.peek().kind == "AND":
            self.next()
            operands.append(self.boolean())
        return first if len(operands) == 1 else And(operands, _col(first))

    def boolean(self) -> BoolExpr:
        start = self.peek()
        negated = start.kind == "NOT"
        if negated:
            self.next()
        node: BoolExpr
        if self.peek().kind == "LPAREN":
            self.next()
            node = self.or_expr()
            self.expect("RPAREN", "')' to close the parenthesis")
        else:
            left = self.value()
            tok = self.peek()
            if tok.kind == "CMP":
                self.next()
                right = self.value()
                node = Comparison(tok.text, left, right, _col(left))
            elif isinstance(left, Call) or (isinstance(left, Literal) and left.kind == "bool"):
                node = BoolConst(left, left.col)
            else:
                raise OTTLError(
                    f"expected a comparison operator (==, !=, <, <=, >, >=) after {_describe_value(left)}, found {tok.describe()}",
                    tok.col,
                )
        return Not(node, start.col) if negated else node

    # -- values ----------------------------------------------------------------------------

    def value(self) -> Value:
        tok = self.peek()
        node: Value
        if tok.kind == "STRING":
            self.next()
            node = Literal(unquote(tok.text, tok.col), "str", tok.col)
        elif tok.kind == "BYTES":
            self.next()
            digits = tok.text[2:]
            if len(digits) % 2:
                raise OTTLError("a byte slice literal needs an even number of hex digits", tok.col)
            node = Literal(bytes.fromhex(digits), "bytes", tok.col)
        elif tok.kind == "BOOL":
            self.next()
            node = Literal(tok.text == "true", "bool", tok.col)
        elif tok.kind == "INT":
            self.next()
            value = int(tok.text)
            if not -(2**63) <= value < 2**63:
                raise OTTLError("integer literal out of the int64 range", tok.col)
            node = Literal(value, "int", tok.col)
        elif tok.kind == "FLOAT":
            self.next()
            node = Literal(float(tok.text), "float", tok.col)
        elif tok.kind == "IDENT" and tok.text == "nil":
            self.next()
            node = Literal(None, "nil", tok.col)
        elif tok.kind == "IDENT" and tok.text[0].isupper():
            if self.peek(1).kind == "LPAREN":
                node = self.call()
            elif _ENUM_RE.match(tok.text):
                self.next()
                node = Enum(tok.text, tok.col)
            else:
                raise OTTLError(
                    f"{tok.text!r} is neither an enum (all upper case) nor a converter call (missing '(')", tok.col
                )
        elif tok.kind == "IDENT":
            if self.peek(1).kind == "LPAREN" and _EDITOR_RE.match(tok.text):
                raise OTTLError(
                    f"converter names must start with an uppercase letter but got {tok.text!r} "
                    "(editors cannot be used in a condition)",
                    tok.col,
                )
            node = self.path()
        elif tok.kind == "LBRACK":
            node = self.list_value()
        elif tok.kind == "LBRACE":
            raise OTTLError("map literals are not supported in AppGuard conditions", tok.col)
        elif tok.kind == "LPAREN":
            raise OTTLError("parentheses around values (math expressions) are not supported", tok.col)
        else:
            raise OTTLError(f"expected a value but found {tok.describe()}", tok.col)
        after = self.peek()
        if after.kind == "MATH" or (after.kind in ("INT", "FLOAT") and after.text[0] in "+-"):
            raise OTTLError("math expressions (+ - * /) are not supported in AppGuard conditions", after.col)
        return node

    def path(self) -> Path:
        first = self.peek()
        segments = [self.segment()]
        while self.peek().kind == "DOT":
            self.next()
            segments.append(self.segment())
        return Path(segments, first.col)

    def segment(self) -> Segment:
        tok = self.expect("IDENT", "a path segment")
        if not _LOWER_RE.match(tok.text):
            raise OTTLError(f"path segments are lower case letters, digits and '_', got {tok.text!r}", tok.col)
        seg = Segment(tok.text)
        while self.peek().kind == "LBRACK":
            self.next()
            key = self.peek()
            if key.kind == "STRING":
                seg.keys.append(unquote(key.text, key.col))
            elif key.kind == "INT":
                seg.keys.append(int(key.text))
            else:
                raise OTTLError(f"expected a string or integer key inside [...] but found {key.describe()}", key.col)
            self.next()
            self.expect("RBRACK", "']' after the key")
        return seg

    def call(self) -> Call:
        name = self.next()
        self.expect("LPAREN", "'('")
        args: list[Argument] = []
        if self.peek().kind != "RPAREN":
            while True:
                tok = self.peek()
                if tok.kind == "IDENT" and self.peek(1).kind == "EQUAL":
                    self.next()
                    self.next()
                    args.append(Argument(tok.text, self.value(), tok.col))
                else:
                    if args and args[-1].name is not None:
                        raise OTTLError("positional arguments must come before named arguments", tok.col)
                    args.append(Argument(None, self.value(), tok.col))
                if self.peek().kind != "COMMA":
                    break
                self.next()
        self.expect("RPAREN", "',' or ')' in the argument list")
        if self.peek().kind == "LBRACK":
            raise OTTLError("indexing the result of a converter is not supported", self.peek().col)
        return Call(name.text, args, name.col)

    def list_value(self) -> ListValue:
        start = self.next()
        items: list[Value] = []
        if self.peek().kind != "RBRACK":
            while True:
                items.append(self.value())
                if self.peek().kind != "COMMA":
                    break
                self.next()
        self.expect("RBRACK", "',' or ']' in the list")
        return ListValue(items, start.col)


def _col(node: object) -> int:
    return getattr(node, "col", 0)


def _describe_value(value: Value) -> str:
    if isinstance(value, Path):
        return f"the path {value.text}"
    if isinstance(value, Literal):
        return f"the {value.kind} literal"
    if isinstance(value, Enum):
        return f"the enum {value.name}"
    if isinstance(value, ListValue):
        return "the list"
    return "the value"


def parse_condition(text: str) -> BoolExpr:
    """Parse one condition into its syntax tree, raising :class:`OTTLError` with a column."""
    if not text or not text.strip():
        raise OTTLError("the condition is empty", 1)
    return _Parser(text).condition()
