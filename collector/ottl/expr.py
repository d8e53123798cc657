"""Compiled expressions: Python source text with what the compiler knows about it.

A condition compiles to one Python expression. Each part carries its static type (so that
``name == "x"`` becomes a plain string comparison), the deepest telemetry level it reads
(so that parts reading only the resource or scope are computed once per resource or scope,
not once per span), whether it can raise at run time, and its value when it is a constant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NO_CONST: Any = object()

# Static types. "av" is an attribute lookup result (AnyValue message or None), "avb" an
# AnyValue that is always present (a log body); both are converted to runtime values only when
# a rule needs it. "any" is a runtime value of unknown kind; "tid"/"sid" are raw id bytes.
PRIMITIVES = frozenset({"str", "int", "float", "bool"})


@dataclass
class Expr:
    """Python source for a value or boolean, and its static facts."""

    code: str
    type: str
    level: int = -1  # deepest telemetry level read; -1 for constants
    raises: bool = False
    const: Any = NO_CONST
    # For single-key attribute lookups on an item: (level, key) - used by the byte prefilter.
    attr_key: tuple[int, str] | None = None

    @property
    def is_const(self) -> bool:
        return self.const is not NO_CONST


@dataclass
class CodeGen:
    """Per-condition code generation state: constants, hoisted parts, prefilter needles."""

    prefix: str
    context_level: int
    consts: dict[str, Any] = field(default_factory=dict)
    hoists: list[tuple[int, str, str]] = field(default_factory=list)
    needles: list[tuple[str, bytes]] = field(default_factory=list)
    _n: int = 0

    def name(self, kind: str) -> str:
        self._n += 1
        return f"_{self.prefix}{kind}{self._n}"

    def const(self, value: Any) -> str:
        """A name bound to ``value`` in the generated module (regexes, tuples, odd floats)."""
        name = self.name("k")
        self.consts[name] = value
        return name

    def literal(self, value: Any) -> str:
        """Source text for a constant value."""
        if value is None or isinstance(value, (bool, int, str, bytes)):
            return repr(value)
        if isinstance(value, float) and value == value and value not in (float("inf"), float("-inf")):
            return repr(value)
        return self.const(value)

    def hoist(self, expr: Expr) -> Expr:
        """Compute ``expr`` once per entity of its level, if it is worth it and safe.

        Only expressions below the condition's own level, that cannot raise and are not
        constants, are moved: they are then evaluated even where the original ``and``/``or``
        would have skipped them, which is harmless because they have no effects.
        """
        if expr.is_const or expr.raises or expr.level >= self.context_level or expr.code.isidentifier():
            return expr
        var = self.name("h")
        self.hoists.append((max(expr.level, 0), var, expr.code))
        return Expr(var, expr.type, expr.level, False, NO_CONST, expr.attr_key)
