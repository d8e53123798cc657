"""The syntax tree of an OTTL condition, as the parser builds it.

Every node carries ``col``, the 1-based column of its first character in the condition text,
so that compile errors can point at the offending part.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class OTTLError(ValueError):
    """A condition that cannot be parsed or compiled; ``col`` is 1-based (0 when unknown)."""

    def __init__(self, message: str, col: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.col = col

    def __str__(self) -> str:
        return f"column {self.col}: {self.message}" if self.col else self.message


@dataclass
class Literal:
    """A string, int, float, bool, nil or byte-slice literal."""

    value: object
    kind: str  # "str" | "int" | "float" | "bool" | "nil" | "bytes"
    col: int


@dataclass
class Enum:
    """An upper-case enum symbol such as ``SPAN_KIND_SERVER``."""

    name: str
    col: int


@dataclass
class Segment:
    """One dotted part of a path and the ``["key"]`` / ``[0]`` indexes after it."""

    name: str
    keys: list[str | int] = field(default_factory=list)


@dataclass
class Path:
    """A telemetry path: ``resource.attributes["k"]``, ``name``, ``span.status.code``..."""

    segments: list[Segment]
    col: int

    @property
    def text(self) -> str:
        """The path as written (keys normalised)."""
        parts = []
        for seg in self.segments:
            keys = "".join(f'["{k}"]' if isinstance(k, str) else f"[{k}]" for k in seg.keys)
            parts.append(seg.name + keys)
        return ".".join(parts)


@dataclass
class ListValue:
    """A ``[a, b, c]`` list, only meaningful as a function argument."""

    items: list[Value]
    col: int


@dataclass
class Argument:
    """A function argument, positional (``name`` is None) or named (``name = value``)."""

    name: str | None
    value: Value
    col: int


@dataclass
class Call:
    """A converter invocation such as ``IsMatch(name, "^GET")``."""

    name: str
    args: list[Argument]
    col: int


@dataclass
class Comparison:
    """``left op right`` with op one of ``== != < <= > >=``."""

    op: str
    left: Value
    right: Value
    col: int


@dataclass
class Not:
    """``not <boolean>``."""

    operand: BoolExpr
    col: int


@dataclass
class And:
    """Booleans joined by ``and`` (evaluated left to right, stopping at the first false)."""

    operands: list[BoolExpr]
    col: int


@dataclass
class Or:
    """Terms joined by ``or`` (evaluated left to right, stopping at the first true)."""

    operands: list[BoolExpr]
    col: int


@dataclass
class BoolConst:
    """A boolean on its own: ``true``/``false`` or a converter call returning a boolean."""

    value: Literal | Call
    col: int


Value = Literal | Enum | Path | Call | ListValue
BoolExpr = Comparison | Not | And | Or | BoolConst
Node = Value | BoolExpr
