"""The OTTL converters AppGuard's conditions offer, with the stock semantics.

Standard converters (every context): ``IsMatch``, ``IsString``, ``IsMap``, ``Len``, ``Int``,
``Double``, ``String``, ``Concat``, ``Substring``, ``ConvertCase``, ``TraceID``, ``SpanID``.
``IsRootSpan`` exists in the span context only and the filter processor's
``HasAttrKeyOnDatapoint`` / ``HasAttrOnDatapoint`` in the metric context only, as in the
stock collector.

Each converter compiles, at config time, to Python source calling a small helper; arguments
that the stock functions require to be literals (the ``IsMatch`` pattern, the
``ConvertCase`` case...) are checked then, so a bad regexp is a config error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from collector.ottl.ast import Call, OTTLError, Value
from collector.ottl.expr import CodeGen, Expr
from collector.ottl.re2 import RE2Error, compile_re2
from collector.ottl.values import (
    OTTLRuntimeError,
    PMap,
    PSlice,
    SpanIDValue,
    TraceIDValue,
    anyvalue,
    string_like,
    to_camel,
    to_lower,
    to_snake,
    to_upper,
)

CompileValue = Callable[[Value], Expr]

COLLECTIONS = frozenset({"events", "links", "data_points"})


def to_any(expr: Expr, node: Value | None = None) -> str:
    """Source producing the runtime value of ``expr`` (attribute messages converted)."""
    if expr.type in ("av", "avb"):
        return f"_av({expr.code})"
    if expr.type == "tid":
        return f"_TID({expr.code})"
    if expr.type == "sid":
        return f"_SID({expr.code})"
    if expr.type in COLLECTIONS:
        raise OTTLError(f"{expr.type} can only be used inside Len()", getattr(node, "col", 0))
    return expr.code


# -- runtime helpers called by generated code --------------------------------------------------


def ismatch_av(pattern: Any, v: Any) -> bool:
    """``IsMatch`` on an attribute lookup result."""
    if v is None:
        return False
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return pattern.search(v.string_value) is not None
    return ismatch_any(pattern, anyvalue(v))


def ismatch_any(pattern: Any, value: Any) -> bool:
    """``IsMatch`` on any runtime value: nil is false, other kinds are matched as text."""
    if value is None:
        return False
    if type(value) is str:
        return pattern.search(value) is not None
    try:
        text = string_like(value)
    except OTTLRuntimeError:
        # Only NaN/Inf doubles cannot be written as JSON; they match nothing rather than
        # failing the condition, which keeps IsMatch safe to compute once per scope.
        return False
    return text is not None and pattern.search(text) is not None


def is_string_av(v: Any) -> bool:
    return v is not None and v.WhichOneof("value") == "string_value"


def is_map_av(v: Any) -> bool:
    return v is not None and v.WhichOneof("value") == "kvlist_value"


def concat(values: list[Any], delimiter: Any) -> str:
    """``Concat``: values as text (nil as ``<nil>``) joined by the delimiter."""
    if type(delimiter) is not str:
        raise OTTLRuntimeError("Concat: the delimiter must be a string")
    parts = []
    for value in values:
        text = string_like(value)
        parts.append("<nil>" if text is None else text)
    return delimiter.join(parts)


def convert_case(value: Any, case: str) -> Any:
    """``ConvertCase``: non-string targets give nil, as the stock function does."""
    if type(value) is not str:
        return None
    if not value:
        return value
    return _CASES[case](value)


_CASES: dict[str, Callable[[str], str]] = {"lower": to_lower, "upper": to_upper, "snake": to_snake, "camel": to_camel}


def make_trace_id(value: Any) -> TraceIDValue:
    if type(value) is not bytes or len(value) != 16:
        raise OTTLRuntimeError("TraceID: traces ids must be 16 bytes")
    return TraceIDValue(value)


def make_span_id(value: Any) -> SpanIDValue:
    if type(value) is not bytes or len(value) != 8:
        raise OTTLRuntimeError("SpanID: span ids must be 8 bytes")
    return SpanIDValue(value)


def has_datapoint_attr(m: Any, kind: str | None, key: str, expected: str | None) -> bool:
    """``HasAttrKeyOnDatapoint`` / ``HasAttrOnDatapoint``: any data point of the metric."""
    if kind is None:
        return False
    for dp in getattr(m, kind).data_points:
        for kv in dp.attributes:
            if kv.key == key and (expected is None or (kv.value.string_value == expected and kv.value.WhichOneof("value") == "string_value")):
                return True
    return False


def is_map_any(value: Any) -> bool:
    return isinstance(value, (PMap, dict))


RUNTIME: dict[str, Any] = {
    "_ismatch_av": ismatch_av,
    "_ismatch_any": ismatch_any,
    "_is_string_av": is_string_av,
    "_is_map_av": is_map_av,
    "_is_map_any": is_map_any,
    "_concat": concat,
    "_convert_case": convert_case,
    "_make_trace_id": make_trace_id,
    "_make_span_id": make_span_id,
    "_has_dp_attr": has_datapoint_attr,
    "_PSlice": PSlice,
}


# -- compile-time specs ----------------------------------------------------------------------


@dataclass
class Bound:
    """A compiled argument and the syntax node it came from."""

    node: Value
    expr: Expr


Builder = Callable[[CodeGen, dict[str, Bound], Call], Expr]


@dataclass
class FunctionSpec:
    name: str
    params: tuple[str, ...]
    required: int
    build: Builder
    contexts: frozenset[str] | None = None  # None: every context
    returns_bool: bool = False


def _const_str(bound: Bound | None, what: str, call: Call) -> str:
    if bound is None or not bound.expr.is_const or not isinstance(bound.expr.const, str):
        col = bound.node.col if bound is not None else call.col
        raise OTTLError(f"{call.name}: {what} must be a string literal", col)
    return bound.expr.const  # type: ignore[no-any-return]


def _merge(*exprs: Expr) -> tuple[int, bool]:
    return max((e.level for e in exprs), default=-1), any(e.raises for e in exprs)


def _is_match(gen: CodeGen, args: dict[str, Bound], call: Call) -> Expr:
    pattern = _const_str(args["pattern"], "the pattern", call)
    try:
        regex = compile_re2(pattern)
    except RE2Error as exc:
        raise OTTLError(f"the pattern supplied to IsMatch is not a valid regexp pattern: {exc}", args["pattern"].node.col) from None
    target = args["target"].expr
    name = gen.const(regex)
    if target.type == "str":
        code = f"({name}.search({target.code}) is not None)"
    elif target.type in ("av", "avb"):
        code = f"_ismatch_av({name}, {target.code})"
    else:
        code = f"_ismatch_any({name}, {to_any(target, args['target'].node)})"
    return Expr(code, "bool", target.level, target.raises)


def _is_string(gen: CodeGen, args: dict[str, Bound], call: Call) -> Expr:
    target = args["target"].expr
    if target.type in ("av", "avb"):
        return Expr(f"_is_string_av({target.code})", "bool", target.level, target.raises)
    return Expr(f"(type({to_any(target, args['target'].node)}) is str)", "bool", target.level, target.raises)


def _is_map(gen: CodeGen, args: dict[str, Bound], call: Call) -> Expr:
    target = args["target"].expr
    if target.type in ("av", "avb"):
        return Expr(f"_is_map_av({target.code})", "bool", target.level, target.raises)
    return Expr(f"_is_map_any({to_any(target, args['target'].node)})", "bool", target.level, target.raises)


def _len(gen: CodeGen, args: dict[str, Bound], call: Call) -> Expr:
    target = args["target"].expr
    if target.type in COLLECTIONS:
        # An AppGuard addition: the stock Len does not take span events, links or data points.
        return Expr(f"len({target.code})", "int", target.level, target.raises)
    if target.type == "str":
        return Expr(f"_golen({target.code})", "int", target.level, target.raises)
    return Expr(f"_golen({to_any(target, args['target'].node)})", "int", target.level, True)


def _unary(helper: str, result: str) -> Builder:
    def build(gen: CodeGen, args: dict[str, Bound], call: Call) -> Expr:
        target = args["target"].expr
        return Expr(f"{helper}({to_any(target, args['target'].node)})", result, target.level, True)

    return build


def _string(gen: CodeGen, args: dict[str, Bound], call: Call) -> Expr:
    target = args["target"].expr
    if target.type == "str":
        return target
    return Expr(f"_string_like({to_any(target, args['target'].node)})", "any", target.level, True)


def _concat(gen: CodeGen, args: dict[str, Bound], call: Call) -> Expr:
    values = args["vals"]
    if values.expr.type != "list":
        raise OTTLError("Concat: the first argument must be a list, like [a, b]", values.node.col)
    delimiter = args["delimiter"].expr
    level, _ = _merge(values.expr, delimiter)
    return Expr(f"_concat({values.expr.code}, {to_any(delimiter, args['delimiter'].node)})", "str", level, True)


def _substring(gen: CodeGen, args: dict[str, Bound], call: Call) -> Expr:
    utf8 = args.get("utf8_safe")
    safe = False
    if utf8 is not None:
        if not (utf8.expr.is_const and isinstance(utf8.expr.const, bool)):
            raise OTTLError("Substring: utf8_safe must be true or false", utf8.node.col)
        safe = utf8.expr.const
    parts = [args[p].expr for p in ("target", "start", "length")]
    codes = [to_any(args[p].expr, args[p].node) for p in ("target", "start", "length")]
    level, _ = _merge(*parts)
    return Expr(f"_substring({codes[0]}, {codes[1]}, {codes[2]}, {safe!r})", "str", level, True)


def _convert_case(gen: CodeGen, args: dict[str, Bound], call: Call) -> Expr:
    case = _const_str(args["to_case"], "the case", call)
    if case not in _CASES:
        raise OTTLError(f"invalid case: {case}, allowed cases are: lower, upper, snake, camel", args["to_case"].node.col)
    target = args["target"].expr
    code = f"_convert_case({to_any(target, args['target'].node)}, {case!r})"
    return Expr(code, "str" if target.type == "str" else "any", target.level, target.raises)


def _id_builder(kind: str, size: int, helper: str, wrap: type[bytes]) -> Builder:
    def build(gen: CodeGen, args: dict[str, Bound], call: Call) -> Expr:
        arg = args["bytes"]
        if arg.expr.is_const:
            value = arg.expr.const
            if type(value) is not bytes or len(value) != size:
                raise OTTLError(f"{call.name}: a byte slice of exactly {size} bytes is needed, like 0x{'00' * size}", arg.node.col)
            return Expr(repr(value), kind, -1, False, wrap(value))
        return Expr(f"{helper}({to_any(arg.expr, arg.node)})", "any", arg.expr.level, True)

    return build


def _is_root_span(gen: CodeGen, args: dict[str, Bound], call: Call) -> Expr:
    return Expr("(not sp.parent_span_id.strip(b'\\x00'))", "bool", 2)


def _has_attr_key(gen: CodeGen, args: dict[str, Bound], call: Call) -> Expr:
    key = _const_str(args["key"], "the key", call)
    return Expr(f"_has_dp_attr(m, mk, {key!r}, None)", "bool", 2)


def _has_attr(gen: CodeGen, args: dict[str, Bound], call: Call) -> Expr:
    key = _const_str(args["key"], "the key", call)
    value = _const_str(args["expected_val"], "the value", call)
    return Expr(f"_has_dp_attr(m, mk, {key!r}, {value!r})", "bool", 2)


FUNCTIONS: dict[str, FunctionSpec] = {
    spec.name: spec
    for spec in (
        FunctionSpec("IsMatch", ("target", "pattern"), 2, _is_match, returns_bool=True),
        FunctionSpec("IsString", ("target",), 1, _is_string, returns_bool=True),
        FunctionSpec("IsMap", ("target",), 1, _is_map, returns_bool=True),
        FunctionSpec("Len", ("target",), 1, _len),
        FunctionSpec("Int", ("target",), 1, _unary("_int_like", "any")),
        FunctionSpec("Double", ("target",), 1, _unary("_float_like", "any")),
        FunctionSpec("String", ("target",), 1, _string),
        FunctionSpec("Concat", ("vals", "delimiter"), 2, _concat),
        FunctionSpec("Substring", ("target", "start", "length", "utf8_safe"), 3, _substring),
        FunctionSpec("ConvertCase", ("target", "to_case"), 2, _convert_case),
        FunctionSpec("TraceID", ("bytes",), 1, _id_builder("tid", 16, "_make_trace_id", TraceIDValue)),
        FunctionSpec("SpanID", ("bytes",), 1, _id_builder("sid", 8, "_make_span_id", SpanIDValue)),
        FunctionSpec("IsRootSpan", (), 0, _is_root_span, frozenset({"span"}), returns_bool=True),
        FunctionSpec("HasAttrKeyOnDatapoint", ("key",), 1, _has_attr_key, frozenset({"metric"}), returns_bool=True),
        FunctionSpec("HasAttrOnDatapoint", ("key", "expected_val"), 2, _has_attr, frozenset({"metric"}), returns_bool=True),
    )
}


def available(name: str, context: str) -> bool:
    """Whether converter ``name`` exists in ``context``."""
    spec = FUNCTIONS.get(name)
    return spec is not None and (spec.contexts is None or context in spec.contexts)


def compile_call(call: Call, context: str, gen: CodeGen, compile_value: CompileValue) -> Expr:
    """Compile a converter call in ``context``."""
    spec = FUNCTIONS.get(call.name)
    if spec is None:
        supported = ", ".join(sorted(FUNCTIONS))
        raise OTTLError(f'undefined function "{call.name}" (AppGuard supports: {supported})', call.col)
    if spec.contexts is not None and context not in spec.contexts:
        where = " and ".join(sorted(spec.contexts))
        raise OTTLError(f"{call.name} is only available in the {where} context, not in {context}", call.col)
    bound: dict[str, Bound] = {}
    for i, arg in enumerate(call.args):
        if arg.name is None:
            if i >= len(spec.params):
                raise OTTLError(f"{call.name} takes at most {len(spec.params)} arguments, got {len(call.args)}", arg.col)
            pname = spec.params[i]
        else:
            if arg.name not in spec.params:
                raise OTTLError(f"{call.name} has no argument named {arg.name!r} (it takes {', '.join(spec.params)})", arg.col)
            pname = arg.name
        if pname in bound:
            raise OTTLError(f"{call.name}: argument {pname!r} is given twice", arg.col)
        bound[pname] = Bound(arg.value, compile_value(arg.value))
    missing = [p for p in spec.params[: spec.required] if p not in bound]
    if missing:
        raise OTTLError(
            f"{call.name} takes {spec.required} argument{'s' if spec.required != 1 else ''} "
            f"({', '.join(spec.params[: spec.required])}), missing {', '.join(missing)}",
            call.col,
        )
    for b in bound.values():
        if b.expr.type in COLLECTIONS and spec.name != "Len":
            raise OTTLError(f"{b.expr.type} can only be used inside Len()", b.node.col)
    return spec.build(gen, bound, call)
