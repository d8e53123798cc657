"""OTTL conditions compiled to Python, and the filtering program built from them.

:func:`compile_condition` turns one condition into a Python boolean expression over the
telemetry of its context (checked once, at config time: unknown paths, functions, enums and
bad regexps are errors there, with the column). :func:`build_program` joins all the
conditions of one signal into a single generated function that walks an export request once,
resource by resource, scope by scope and item by item, and returns what to delete - the
processor only touches the message when that plan is not empty.

What the generated code does per level:

* parts of a condition that read only the resource or the scope are computed once per
  resource or scope; a condition that reads nothing below the scope is decided there, for
  all the scope's items at once;
* conditions are tried in order and ORed; one that raises is treated as false and reported
  through the error callback (which raises in ``propagate`` mode);
* ``attributes["k"] == "literal"`` is first checked against the bytes of the request (and of
  the item when the request has the text): a literal absent from the bytes cannot be equal;
* with item conditions, scopes left without items and resources left without scopes are
  removed, as the stock processor does.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from collector.ottl import contexts as ctx
from collector.ottl import functions as fn
from collector.ottl.ast import (
    And,
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
    Value,
)
from collector.ottl.expr import PRIMITIVES, CodeGen, Expr
from collector.ottl.parser import parse_condition
from collector.ottl.prefilter import NOTHING, ItemIndex
from collector.ottl.values import (
    OPS,
    ZERO_SPAN_ID,
    ZERO_TRACE_ID,
    PMap,
    SpanIDValue,
    TraceIDValue,
    anyvalue,
    as_string,
    compare,
    float_like,
    get_attr,
    go_len,
    index_body,
    index_value,
    int_like,
    is_nil,
    string_like,
    substring,
    trace_state_get,
)
from collector.pdata import Signal

ERROR_MODES = ("ignore", "silent", "propagate")

# The stock context inferrer's priorities (pkg/ottl/context_inferrer.go), used to pick among
# lower contexts when the deepest one named by the paths lacks a function or enum.
_PRIORITY = ("log", "datapoint", "metric", "spanevent", "span", "resource", "scope")
_REVERSED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


# -- collecting hints ----------------------------------------------------------------------


def _walk(node: Any) -> list[Any]:
    out = [node]
    if isinstance(node, (And, Or)):
        for child in node.operands:
            out.extend(_walk(child))
    elif isinstance(node, Not):
        out.extend(_walk(node.operand))
    elif isinstance(node, Comparison):
        out.extend(_walk(node.left) + _walk(node.right))
    elif isinstance(node, BoolConst):
        out.extend(_walk(node.value))
    elif isinstance(node, Call):
        for arg in node.args:
            out.extend(_walk(arg.value))
    elif isinstance(node, ListValue):
        for item in node.items:
            out.extend(_walk(item))
    return out


def infer_context(signal: Signal, tree: BoolExpr) -> str:
    """The context a condition runs in, from its path prefixes (the stock inference rules).

    The deepest context named by a path prefix wins (``resource.x or span.y`` runs per span);
    if that context lacks a converter or enum the condition uses, lower contexts are tried.
    """
    nodes = _walk(tree)
    names = ctx.CONTEXTS[signal]
    candidate: str | None = None
    for node in nodes:
        if not isinstance(node, Path):
            continue
        first = node.segments[0]
        name = ctx.ALIASES.get(first.name, first.name)
        if first.name not in ctx.ALL_CONTEXT_NAMES or first.keys or len(node.segments) < 2:
            raise OTTLError(
                f'missing context name for path "{node.text}": it must start with one of {", ".join(names)} '
                "(or give the condition group an explicit `context`)",
                node.col,
            )
        if name not in names:
            raise OTTLError(f'path "{node.text}" reads the {name} context, which {signal.value} conditions do not have', node.col)
        if candidate is None or names.index(name) > names.index(candidate):
            candidate = name
    if candidate is None:
        raise OTTLError(
            f"unable to infer a context: no path starts with a context name ({', '.join(names)}); "
            "give the condition group an explicit `context`",
            1,
        )
    calls = {n.name for n in nodes if isinstance(n, Call)}
    enums = {n.name for n in nodes if isinstance(n, Enum)}

    def supports(name: str) -> bool:
        return all(fn.available(c, name) for c in calls) and all(e in ctx.ENUMS[name] for e in enums)

    if supports(candidate):
        return candidate
    lower = sorted(names[names.index(candidate) + 1 :], key=_PRIORITY.index)
    for name in lower:
        if supports(name):
            return name
    return candidate  # compiling then reports precisely what is missing


# -- compiling one condition -----------------------------------------------------------------


@dataclass
class CompiledCondition:
    """One condition, compiled for its context (the program joins several of these)."""

    text: str
    signal: Signal
    context: str
    level: int  # the level of its context
    eval_level: int  # where it is decided (<= level when it reads only higher levels)
    code: str
    raises: bool
    hoists: list[tuple[int, str, str]]
    consts: dict[str, Any]
    needles: list[tuple[str, bytes]]
    error_mode: str | None = None  # a group's own error_mode, overriding the processor's


class _Compiler:
    def __init__(self, signal: Signal, context: str, gen: CodeGen, require_prefix: bool) -> None:
        self.signal = signal
        self.context = context
        self.gen = gen
        self.paths = ctx.PathResolver(signal, context, gen, require_prefix)

    # values

    def value(self, node: Value) -> Expr:
        if isinstance(node, Literal):
            if node.kind == "nil":
                return Expr("None", "nil", const=None)
            return Expr(self.gen.literal(node.value), node.kind, const=node.value)
        if isinstance(node, Enum):
            enums = ctx.ENUMS[self.context]
            if node.name not in enums:
                raise OTTLError(f"enum symbol {node.name} is not defined in the {self.context} context", node.col)
            return Expr(str(enums[node.name]), "int", const=enums[node.name])
        if isinstance(node, Path):
            return self.paths.resolve(node)
        if isinstance(node, ListValue):
            items = [self.value(item) for item in node.items]
            level = max((e.level for e in items), default=-1)
            raises = any(e.raises for e in items)
            if level >= self.gen.context_level or raises:
                items = [self.gen.hoist(e) for e in items]
            code = "[" + ", ".join(fn.to_any(e, n) for e, n in zip(items, node.items, strict=True)) + "]"
            return Expr(code, "list", level, raises)
        return self.call(node)

    def call(self, node: Call) -> Expr:
        compiled: dict[int, Expr] = {}

        def first_pass(arg: Value) -> Expr:
            compiled[id(arg)] = self.value(arg)
            return compiled[id(arg)]

        expr = fn.compile_call(node, self.context, self.gen, first_pass)
        if expr.level >= self.gen.context_level or expr.raises:
            # The call itself stays per item; arguments that read only higher levels are
            # computed once per resource/scope.
            expr = fn.compile_call(node, self.context, self.gen, lambda arg: self.gen.hoist(compiled[id(arg)]))
        return expr

    # booleans

    def boolean(self, node: BoolExpr) -> Expr:
        if isinstance(node, Comparison):
            return self.comparison(node)
        if isinstance(node, BoolConst):
            if isinstance(node.value, Literal):
                return Expr(repr(node.value.value), "bool", const=node.value.value)
            spec = fn.FUNCTIONS.get(node.value.name)
            expr = self.call(node.value)
            if spec is not None and not spec.returns_bool:
                raise OTTLError(f"{node.value.name} does not return a boolean: compare its result instead", node.col)
            return expr
        if isinstance(node, Not):
            inner = self.boolean(node.operand)
            if inner.is_const:
                return Expr(repr(not inner.const), "bool", const=not inner.const)
            return Expr(f"(not {inner.code})", "bool", inner.level, inner.raises)
        operands = [self.boolean(op) for op in node.operands]
        joiner = " and " if isinstance(node, And) else " or "
        if all(e.is_const for e in operands):
            value = all(e.const for e in operands) if isinstance(node, And) else any(e.const for e in operands)
            return Expr(repr(value), "bool", const=value)
        level = max(e.level for e in operands)
        raises = any(e.raises for e in operands)
        if level >= self.gen.context_level or raises:
            operands = [self.gen.hoist(e) for e in operands]
        return Expr("(" + joiner.join(e.code for e in operands) + ")", "bool", level, raises)

    def comparison(self, node: Comparison) -> Expr:
        left, right = self.value(node.left), self.value(node.right)
        lnode, rnode = node.left, node.right
        op = node.op
        for e, n in ((left, lnode), (right, rnode)):
            if e.type in fn.COLLECTIONS:
                raise OTTLError(f"{e.type} can only be used inside Len()", n.col)
        if left.is_const and right.is_const:
            value = compare(left.const, right.const, OPS[op])
            return Expr(repr(value), "bool", const=value)
        if left.is_const:
            left, right, lnode, rnode, op = right, left, rnode, lnode, _REVERSED[op]
        level = max(left.level, right.level)
        raises = left.raises or right.raises
        if level >= self.gen.context_level or raises:
            left, right = self.gen.hoist(left), self.gen.hoist(right)
        opn = OPS[op]
        special = self._special(op, opn, left, right)
        if special is not None:
            return Expr(special, "bool", level, raises) if special not in ("True", "False") or raises else Expr(special, "bool", const=special == "True")
        code = f"_cmp({fn.to_any(left, lnode)}, {fn.to_any(right, rnode)}, {opn})"
        return Expr(code, "bool", level, raises)

    def _special(self, op: str, opn: int, left: Expr, right: Expr) -> str | None:
        """Direct Python for the common shapes; None to use the general ``_cmp``."""
        eq_ne = op in ("==", "!=")
        if right.is_const and right.const is None:
            if left.type in PRIMITIVES or left.type in ("tid", "sid", "pmap", "list"):
                return repr(op == "!=") if not left.raises else None
            if left.type in ("av", "avb"):
                if op in ("<", ">"):
                    return None if left.raises else "False"
                nil = f"_isnil({left.code})" if left.type == "av" else f"({left.code}.WhichOneof('value') is None)"
                return f"(not {nil})" if op == "!=" else nil
            return None
        if right.is_const and type(right.const) is str and left.type in ("av", "avb") and eq_ne:
            literal = right.const
            if left.type == "av":
                tmp = self.gen.name("t")
                test = f"(({tmp} := {left.code}) is not None and {tmp}.string_value == {literal!r}"
                test += ")" if literal else f" and {tmp}.WhichOneof('value') == 'string_value')"
            else:
                test = f"({left.code}.string_value == {literal!r}" + (")" if literal else f" and {left.code}.WhichOneof('value') == 'string_value')")
            if literal and left.attr_key is not None and left.attr_key[0] == self.gen.context_level:
                test = self._prefiltered(test, literal, left.attr_key[0])
            return test if op == "==" else f"(not {test})"
        if left.type in PRIMITIVES and right.type in PRIMITIVES:
            if left.type == right.type:
                return f"({left.code} {op} {right.code})"
            if {left.type, right.type} == {"int", "float"}:
                return f"(float({left.code}) {op} float({right.code}))"
            return None if left.raises or right.raises else repr(op == "!=")
        if left.type in ("tid", "sid") and right.type == left.type:
            if eq_ne:
                return f"({left.code} {op} {right.code})"
            return None if left.raises or right.raises else "False"
        return None

    def _prefiltered(self, test: str, literal: str, level: int) -> str:
        """Guard an item equality with the byte prefilter (see :mod:`collector.ottl.prefilter`).

        ``<flag>`` is bound per request to the items whose bytes hold the literal, and
        ``<flag>s`` per scope to that scope's share; other items skip the attribute lookup.
        """
        if level != 2:
            return test
        flag = self.gen.name("p")
        self.gen.needles.append((flag, literal.encode("utf-8", "surrogateescape")))
        return f"(ii in {flag}s and {test})"


def compile_condition(
    text: str,
    signal: Signal,
    context: str | None = None,
    *,
    require_prefix: bool | None = None,
    prefix: str = "c0_",
    error_mode: str | None = None,
) -> CompiledCondition:
    """Compile one condition for ``signal``.

    ``context`` given (a legacy ``traces.span`` list or a group's explicit ``context``):
    paths without a context name are fields of that context. ``context`` None: the context
    is inferred from the path prefixes, which every path must then have.
    """
    tree = parse_condition(text)
    if context is None:
        context = infer_context(signal, tree)
        require_prefix = True if require_prefix is None else require_prefix
    context = ctx.ALIASES.get(context, context)
    if context not in ctx.CONTEXTS[signal]:
        raise OTTLError(f"unknown context {context!r} for {signal.value} (use {', '.join(ctx.CONTEXTS[signal])})")
    level = ctx.level_of(signal, context)
    gen = CodeGen(prefix, level)
    compiler = _Compiler(signal, context, gen, bool(require_prefix))
    root = compiler.boolean(tree)
    if root.is_const:
        eval_level = 0
    elif root.level < level and not root.raises:
        eval_level = max(root.level, 0)
    else:
        eval_level = level
    return CompiledCondition(
        text=text,
        signal=signal,
        context=context,
        level=level,
        eval_level=eval_level,
        code=root.code,
        raises=root.raises,
        hoists=gen.hoists,
        consts=gen.consts,
        needles=gen.needles,
        error_mode=error_mode,
    )


# -- the program -----------------------------------------------------------------------------


class ConditionFailed(Exception):
    """A condition raised and its error mode is ``propagate``."""

    def __init__(self, condition: str, error: BaseException) -> None:
        super().__init__(f"condition {condition!r} failed: {error}")
        self.condition = condition
        self.error = error


RUNTIME: dict[str, Any] = {
    **fn.RUNTIME,
    "_attr": get_attr,
    "_index": index_value,
    "_index_body": index_body,
    "_av": anyvalue,
    "_isnil": is_nil,
    "_cmp": compare,
    "_PMap": PMap,
    "_TID": TraceIDValue,
    "_SID": SpanIDValue,
    "_Z16": ZERO_TRACE_ID,
    "_Z8": ZERO_SPAN_ID,
    "_KIND_STR": ctx.SPAN_KIND_STRINGS,
    "_KIND_NAME": ctx.SPAN_KIND_NAMES,
    "_MTYPE": ctx.METRIC_TYPE_NUMBERS,
    "_TEMPORAL": frozenset({"sum", "histogram", "exponential_histogram"}),
    "_NUMBER": frozenset({"gauge", "sum"}),
    "_ts_get": trace_state_get,
    "_as_string": as_string,
    "_golen": go_len,
    "_int_like": int_like,
    "_float_like": float_like,
    "_string_like": string_like,
    "_substring": substring,
    "_ConditionFailed": ConditionFailed,
    "_NOTHING": NOTHING,
}

_CONTAINERS = {
    Signal.TRACES: ("resource_spans", "scope_spans", "spans"),
    Signal.METRICS: ("resource_metrics", "scope_metrics", "metrics"),
    Signal.LOGS: ("resource_logs", "scope_logs", "log_records"),
}

Plan = tuple[list[int], list[tuple[Any, list[int]]], list[tuple[Any, list[int]]], list[tuple[Any, Sequence[int]]]]
ErrorHook = Callable[[int, BaseException], None]


@dataclass
class Program:
    """The generated filter for one signal.

    :meth:`plan` returns what to delete from an export request: resource indices, then
    ``(container, indices)`` for scopes, items and sub-items (span events, data points).
    """

    signal: Signal
    conditions: list[CompiledCondition]
    source: str
    needles: list[bytes]
    run: Callable[[Any, Sequence[Any], ErrorHook], Plan] = field(repr=False)

    @property
    def empty(self) -> bool:
        return not self.conditions

    def plan(self, message: Any, data: bytes | None, on_error: ErrorHook) -> Plan:
        """Evaluate the conditions over ``message``; ``data`` is its bytes when needed.

        ``data`` is used only when some condition has a byte prefilter
        (:attr:`needles`); pass the request's bytes, which the receiver kept.
        """
        if not self.needles:
            return self.run(message, (), on_error)
        index = ItemIndex(data if data is not None else message.SerializeToString())
        return self.run(message, [index.candidates(n) for n in self.needles], on_error)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.indent = 0

    def line(self, text: str) -> None:
        self.lines.append("    " * self.indent + text)


def _emit_checks(w: _Writer, conds: list[tuple[int, CompiledCondition]], modes: list[str], action: str) -> None:
    """``if <any condition>: <action>`` with the conditions tried in order."""
    group: list[str] = []

    def flush() -> None:
        if group:
            w.line(f"if {' or '.join(group)}:")
            w.line(f"    {action}")
            group.clear()

    for index, cond in conds:
        if not cond.raises:
            group.append(cond.code)
            continue
        flush()
        w.line("try:")
        w.line(f"    if {cond.code}:")
        w.line(f"        {action}")
        mode = modes[index]
        if mode == "silent":
            w.line("except Exception:")
            w.line("    pass")
        elif mode == "propagate":
            w.line("except Exception as _e:")
            w.line(f"    raise _ConditionFailed({cond.text!r}, _e) from _e")
        else:
            w.line("except Exception as _e:")
            w.line(f"    _err({index}, _e)")
    flush()


def build_program(signal: Signal, conditions: list[CompiledCondition], default_error_mode: str = "ignore") -> Program:
    """Generate and compile the filter function for ``conditions`` (all of ``signal``)."""
    modes = [c.error_mode or default_error_mode for c in conditions]
    depth = len(ctx.CONTEXTS[signal])
    indexed = list(enumerate(conditions))

    def pick(eval_level: int, *levels: int) -> list[tuple[int, CompiledCondition]]:
        """The conditions decided at ``eval_level`` whose own context is one of ``levels``."""
        return [(i, c) for i, c in indexed if c.eval_level == eval_level and c.level in levels]

    max_level = max((c.level for c in conditions), default=-1)
    hoists: dict[int, list[tuple[str, str]]] = {}
    for c in conditions:
        for level, var, code in c.hoists:
            hoists.setdefault(level, []).append((var, code))
    flags = [flag for c in conditions for flag, _ in c.needles]
    needles = [needle for c in conditions for _, needle in c.needles]
    res_name, scope_name, item_name = _CONTAINERS[signal]
    sub_level = 3 if depth == 4 else None

    w = _Writer()
    w.line("def run(msg, _P, _err):")
    w.indent += 1
    if flags:
        w.line(f"({', '.join(flags)},) = _P")
    w.line("dr = []; ds = []; di = []; de = []")
    if max_level < 0:
        w.line("return dr, ds, di, de")
    else:
        w.line(f"rl = msg.{res_name}")
        w.line("for ri, rs in enumerate(rl):")
        w.indent += 1
        w.line("r = rs.resource")
        # Conditions decided per resource: the resource itself, or all of its scopes/items.
        _emit_checks(w, pick(0, 0, 1, 2), modes, "dr.append(ri); continue")
        # Parts of deeper conditions that read only the resource (never the resource's own
        # conditions, which are decided above).
        for var, code in hoists.get(0, []):
            w.line(f"{var} = {code}")
        kill_sub_r = pick(0, 3)
        if max_level >= 1:
            if kill_sub_r:
                w.line("ksr = False")
                _emit_checks(w, kill_sub_r, modes, "ksr = True")
            w.line(f"sl = rs.{scope_name}")
            w.line("sdel = []")
            w.line("for si, ss in enumerate(sl):")
            w.indent += 1
            w.line("s = ss.scope")
            _emit_checks(w, pick(1, 1, 2), modes, "sdel.append(si); continue")
            for var, code in hoists.get(1, []):
                w.line(f"{var} = {code}")
            for flag in flags:
                w.line(f"{flag}s = {flag}.get((ri, si), _NOTHING)")
            kill_sub_s = pick(1, 3)
            if max_level >= 2:
                sub_flag = "False"
                if kill_sub_r or kill_sub_s:
                    w.line("ks = " + ("ksr" if kill_sub_r else "False"))
                    if kill_sub_s:
                        w.line("if not ks:")
                        w.indent += 1
                        _emit_checks(w, kill_sub_s, modes, "ks = True")
                        w.indent -= 1
                    sub_flag = "ks"
                _emit_item_loop(w, signal, item_name, indexed, modes, hoists, max_level, sub_flag, sub_level)
                w.line("if len(idel) == len(il): sdel.append(si)")
            w.indent -= 1
            w.line("if sdel: ds.append((sl, sdel))")
            w.line("if len(sdel) == len(sl): dr.append(ri)")
        w.indent -= 1
        w.line("return dr, ds, di, de")
    source = "\n".join(w.lines) + "\n"
    namespace: dict[str, Any] = dict(RUNTIME)
    for c in conditions:
        namespace.update(c.consts)
    exec(compile(source, f"<ottl {signal.value} filter>", "exec"), namespace)
    return Program(signal, conditions, source, needles, namespace["run"])


def _emit_item_loop(
    w: _Writer,
    signal: Signal,
    item_name: str,
    indexed: list[tuple[int, CompiledCondition]],
    modes: list[str],
    hoists: dict[int, list[tuple[str, str]]],
    max_level: int,
    sub_flag: str,
    sub_level: int | None,
) -> None:
    item_var = ctx.ITEM_VARS[signal][0]
    item_checks = [(i, c) for i, c in indexed if c.eval_level == 2 and c.level == 2]
    w.line(f"il = ss.{item_name}")
    if not item_checks and (sub_level is None or max_level < 3):
        # Every item condition was decided per resource or scope: no loop over the items.
        w.line("idel = ()")
        return
    w.line("idel = []")
    w.line(f"for ii, {item_var} in enumerate(il):")
    w.indent += 1
    if signal is Signal.METRICS:
        w.line("mk = m.WhichOneof('data')")
    _emit_checks(w, item_checks, modes, "idel.append(ii); continue")
    for var, code in hoists.get(2, []):
        w.line(f"{var} = {code}")
    if sub_level is not None and max_level >= 3:
        kill_sub_i = [(i, c) for i, c in indexed if c.eval_level == 2 and c.level == 3]
        per_sub = [(i, c) for i, c in indexed if c.eval_level == 3]
        sub_var = ctx.ITEM_VARS[signal][1]
        if signal is Signal.TRACES:
            w.line("subs = sp.events")
        else:
            w.line("if mk is None: continue")
            w.line("subs = getattr(m, mk).data_points")
        if kill_sub_i or sub_flag != "False":
            w.line(f"kall = {sub_flag}")
            if kill_sub_i:
                w.line("if not kall:")
                w.indent += 1
                _emit_checks(w, kill_sub_i, modes, "kall = True")
                w.indent -= 1
            w.line("if kall:")
            if signal is Signal.TRACES:
                w.line("    if subs: de.append((subs, range(len(subs))))")
                w.line("    continue")
            else:
                w.line("    idel.append(ii); continue")
        if per_sub:
            w.line("edel = []")
            index_var = "ei" if signal is Signal.TRACES else "di_"
            w.line(f"for {index_var}, {sub_var} in enumerate(subs):")
            w.indent += 1
            _emit_checks(w, per_sub, modes, f"edel.append({index_var}); continue")
            w.indent -= 1
            if signal is Signal.METRICS:
                w.line("if len(edel) == len(subs): idel.append(ii); continue")
            w.line("if edel: de.append((subs, edel))")
        elif signal is Signal.METRICS:
            w.line("if not subs: idel.append(ii); continue")
    w.indent -= 1
    w.line("if idel: di.append((il, idel))")


def apply_plan(message: Any, signal: Signal, plan: Plan) -> None:
    """Delete what ``run`` planned, innermost first so that indices stay valid."""
    dr, ds, di, de = plan
    for container, indices in itertools.chain(de, di, ds):
        _delete(container, indices)
    if dr:
        _delete(getattr(message, _CONTAINERS[signal][0]), dr)


def plan_is_empty(plan: Plan) -> bool:
    """True when the plan deletes nothing (the request can go on untouched)."""
    return not (plan[0] or plan[1] or plan[2] or plan[3])


def _delete(container: Any, indices: Sequence[int]) -> None:
    """Delete ascending ``indices`` from a repeated field, one slice per run of neighbours."""
    if len(indices) == len(container):
        del container[:]
        return
    i = len(indices) - 1
    while i >= 0:
        end = start = indices[i]
        while i > 0 and indices[i - 1] == start - 1:
            i -= 1
            start -= 1
        del container[start : end + 1]
        i -= 1
