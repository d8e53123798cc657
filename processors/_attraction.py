"""The attribute action engine shared by the ``attributes`` and ``resource`` processors.

It follows the stock collector's ``attraction`` package: a list of actions (``insert``,
``update``, ``upsert``, ``delete``, ``hash``, ``extract``, ``convert``) applied in order to one
attribute list. The list is checked and compiled once, when the config is validated, into
small closures; :meth:`AttrProc.bind` then resolves what depends on the request
(``from_context`` values, and which actions cannot apply because the keys they need appear
nowhere in the request's bytes) and returns one function that works directly on a repeated
``KeyValue`` field of an OTLP message.

Values keep their OTLP ``AnyValue`` types. A value from YAML becomes an ``AnyValue`` the way
the stock collector's ``pcommon.Value.FromRaw`` does it: strings, integers, floats, booleans,
lists, maps and binary.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import math
import re
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from pydantic import PrivateAttr, model_validator

from collector.configtypes import ComponentConfig
from collector.pdata import ExportRequest, Payload

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

ACTIONS = ("insert", "update", "upsert", "delete", "hash", "extract", "convert")
CONVERTED_TYPES = ("int", "double", "string")


class KeyValues(Protocol):
    """A repeated ``KeyValue`` field (span, log record, data point or resource attributes)."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> KeyValue: ...
    def __delitem__(self, index: int) -> None: ...
    def __iter__(self) -> Any: ...
    def add(self) -> KeyValue: ...
    def append(self, value: KeyValue) -> None: ...


# An action works on one attribute list and the list of its keys (kept in step with it, so
# that each item's keys are read from the message once however many actions there are).
# It returns True when it changed something.
Step = Callable[[KeyValues, list[str]], bool]
# What the processors call per attribute list: True when something changed.
Applier = Callable[[KeyValues], bool]


# --- values ----------------------------------------------------------------------------------


def anyvalue_from_raw(raw: Any) -> AnyValue:
    """An ``AnyValue`` from a YAML value, typed as the stock ``FromRaw`` types it.

    Raises ``ValueError`` for what OTLP cannot hold (an integer beyond int64, a date...).
    """
    out = AnyValue()
    _fill_anyvalue(out, raw)
    return out


def _fill_anyvalue(out: AnyValue, raw: Any) -> None:
    if raw is None:
        return  # an empty AnyValue, as pcommon's Empty type
    if isinstance(raw, bool):
        out.bool_value = raw
    elif isinstance(raw, int):
        if not INT64_MIN <= raw <= INT64_MAX:
            raise ValueError(f"integer {raw} does not fit in 64 bits")
        out.int_value = raw
    elif isinstance(raw, float):
        out.double_value = raw
    elif isinstance(raw, str):
        out.string_value = raw
    elif isinstance(raw, (bytes, bytearray)):
        out.bytes_value = bytes(raw)
    elif isinstance(raw, (list, tuple)):
        array = out.array_value
        array.SetInParent()
        for item in raw:
            _fill_anyvalue(array.values.add(), item)
    elif isinstance(raw, Mapping):
        kvlist = out.kvlist_value
        kvlist.SetInParent()
        for key, item in raw.items():
            kv = kvlist.values.add()
            kv.key = str(key)
            _fill_anyvalue(kv.value, item)
    else:
        raise ValueError(
            f"unsupported value type {type(raw).__name__} (quote the value in YAML to make it a string)"
        )


def format_float_es6(f: float) -> str:
    """A double as pcommon's ``AsString`` writes it (JavaScript number formatting)."""
    if math.isnan(f) or math.isinf(f):
        return "json: unsupported value: " + format_float_fixed(f)
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    digits = Decimal(repr(f)).normalize()
    if 1e-6 <= abs(f) < 1e21:
        return format(digits, "f")
    return format(digits, "e")


def format_float_fixed(f: float) -> str:
    """A double as Go's ``strconv.FormatFloat(f, 'f', -1, 64)`` writes it."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    return format(Decimal(repr(f)).normalize(), "f")


def value_as_string(value: AnyValue) -> str:
    """The string form of any value, as pcommon's ``Value.AsString`` gives it."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return format_float_es6(value.double_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind in ("array_value", "kvlist_value"):
        try:
            return _go_json(_as_raw(value))
        except ValueError:
            # Go's encoder refuses NaN and infinities, and pcommon then gives "".
            return ""
    return ""


def _as_raw(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_as_raw(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        out: dict[str, Any] = {}
        for kv in value.kvlist_value.values:
            out.setdefault(kv.key, _as_raw(kv.value))
        return out
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind is None or kind == "string_value_strindex":
        return None
    return getattr(value, kind)


def _go_json(raw: Any) -> str:
    """JSON as Go's ``encoding/json`` writes it: sorted keys, no spaces, HTML-safe strings."""
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, float):
        if math.isnan(raw) or math.isinf(raw):
            raise ValueError("unsupported float")
        return format_float_es6(raw)
    if isinstance(raw, str):
        text = json.dumps(raw, ensure_ascii=False)
        for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
            text = text.replace(char, escaped)
        return text
    if isinstance(raw, list):
        return "[" + ",".join(_go_json(v) for v in raw) + "]"
    return "{" + ",".join(_go_json(k) + ":" + _go_json(raw[k]) for k in sorted(raw)) + "}"


def hash_value(value: AnyValue) -> str:
    """SHA-256 hex digest of a value, as the stock ``hash`` action computes it.

    Strings hash their UTF-8 bytes, integers and doubles their 8 little-endian bytes, booleans
    one byte. Other types (and the empty string) have nothing to hash and become ``""``.
    """
    kind = value.WhichOneof("value")
    if kind == "string_value":
        data = value.string_value.encode("utf-8")
    elif kind == "int_value":
        data = struct.pack("<q", value.int_value)
    elif kind == "double_value":
        data = struct.pack("<d", value.double_value)
    elif kind == "bool_value":
        data = b"\x01" if value.bool_value else b"\x00"
    else:
        data = b""
    return hashlib.sha256(data).hexdigest() if data else ""


_GO_INT = re.compile(r"[+-]?[0-9]+")
_GO_HEX_FLOAT = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?[0-9]+")
_GO_DEC_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_GO_SPECIAL_FLOAT = re.compile(r"[+-]?(?:inf|infinity|nan)", re.IGNORECASE)


def parse_go_int(text: str) -> int | None:
    """``strconv.ParseInt(text, 10, 64)``: the integer, or ``None`` where Go reports an error."""
    if not _GO_INT.fullmatch(text):
        return None
    n = int(text)
    return n if INT64_MIN <= n <= INT64_MAX else None


def parse_go_float(text: str) -> float | None:
    """``strconv.ParseFloat(text, 64)``: the double, or ``None`` where Go reports an error."""
    if _GO_SPECIAL_FLOAT.fullmatch(text):
        return float(text)
    if _GO_HEX_FLOAT.fullmatch(text):
        f = float.fromhex(text)
    elif _GO_DEC_FLOAT.fullmatch(text):
        f = float(text)
    else:
        return None
    # Go reports overflow as an error (ErrRange); Python quietly gives an infinity.
    return None if math.isinf(f) else f


def _double_to_int(f: float) -> int:
    # Go's int64(f) truncates toward zero; where the result does not fit (NaN, infinities,
    # huge values) amd64 yields the minimum int64, which the stock collector then stores.
    if math.isnan(f) or math.isinf(f):
        return INT64_MIN
    n = int(f)
    return n if INT64_MIN <= n <= INT64_MAX else INT64_MIN


def convert_value(value: AnyValue, to: str) -> bool:
    """Convert ``value`` in place to ``int``, ``double`` or ``string`` with the stock's rules.

    A value that cannot be converted (a string that is not a number, an array...) is left as
    it is. Returns True when the value changed.
    """
    kind = value.WhichOneof("value")
    if to == "string":
        if kind == "string_value":
            return False
        value.string_value = value_as_string(value)
        return True
    if to == "int":
        if kind == "double_value":
            value.int_value = _double_to_int(value.double_value)
        elif kind == "bool_value":
            value.int_value = 1 if value.bool_value else 0
        elif kind == "string_value":
            n = parse_go_int(value.string_value)
            if n is None:
                return False
            value.int_value = n
        else:
            return False
        return True
    if to == "double":
        if kind == "int_value":
            value.double_value = float(value.int_value)
        elif kind == "bool_value":
            value.double_value = 1.0 if value.bool_value else 0.0
        elif kind == "string_value":
            f = parse_go_float(value.string_value)
            if f is None:
                return False
            value.double_value = f
        else:
            return False
        return True
    return False


# --- patterns --------------------------------------------------------------------------------


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile an RE2-style pattern (as the stock collector writes them) with Python's ``re``.

    ``(?<name>...)`` is accepted as a named group and ``\\z`` as end of text, as in Go.
    Raises ``ValueError`` with the reason when the pattern does not compile.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            out.append("\\Z" if nxt == "z" else c + nxt)
            i += 2
            continue
        if pattern.startswith("(?<", i) and i + 3 < n and pattern[i + 3] not in "=!":
            out.append("(?P<")
            i += 3
            continue
        out.append(c)
        i += 1
    try:
        return re.compile("".join(out))
    except re.error as exc:
        raise ValueError(str(exc)) from None


# --- the config --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Action:
    """A compiled action.

    ``step`` does the work. ``context_key`` names the ``from_context`` source, resolved per
    request by ``with_value``. ``requires`` lists keys that must appear somewhere in a request
    for the action to have any effect; ``creates`` lists keys it may add. ``adds`` is, for
    insert and upsert of a known value, the attribute to append without looking where the
    key is known to be absent.
    """

    name: str
    step: Step | None
    requires: tuple[str, ...] = ()
    creates: tuple[str, ...] = ()
    adds: KeyValue | None = None
    context_key: str = ""
    with_value: Callable[[AnyValue | None], tuple[Step, KeyValue | None] | None] | None = None


class ActionKeyValue(ComponentConfig):
    """One action, with the stock collector's keys.

    ``action`` is one of insert, update, upsert, delete, hash, extract, convert (any case).
    The action is checked and compiled when the config is validated.
    """

    key: str = ""
    action: str = ""
    value: Any = None
    default_value: Any = None
    from_attribute: str = ""
    from_context: str = ""
    pattern: str = ""
    converted_type: str = ""

    _compiled: _Action = PrivateAttr()

    @model_validator(mode="after")
    def _compile(self) -> ActionKeyValue:
        self._compiled = _compile_action(self)
        return self

    @property
    def compiled(self) -> _Action:
        """The checked, compiled form of this action."""
        return self._compiled


def _value_sources(a: ActionKeyValue) -> int:
    return (a.value is not None) + bool(a.from_attribute) + bool(a.from_context)


def _compile_action(a: ActionKeyValue) -> _Action:
    action = a.action.lower()
    if action not in ACTIONS:
        raise ValueError(f"unsupported action {a.action!r} (use one of {', '.join(ACTIONS)})")
    if action in ("delete", "hash"):
        if not a.key and not a.pattern:
            raise ValueError(f'action "{action}" needs "key", "pattern" or both')
    elif not a.key:
        raise ValueError('missing required field "key"')
    if action not in ("insert", "update", "upsert") and a.default_value is not None:
        raise ValueError(f'action "{action}" does not use "default_value"')
    if action != "convert" and a.converted_type:
        raise ValueError(f'action "{action}" does not use "converted_type"')

    if action in ("insert", "update", "upsert"):
        return _compile_set(a, action)
    if action in ("delete", "hash"):
        if _value_sources(a):
            raise ValueError(f'action "{action}" does not use "value", "from_attribute" or "from_context"')
        regex = _checked_pattern(a.pattern) if a.pattern else None
        step = _delete_step(a.key, regex) if action == "delete" else _hash_step(a.key, regex)
        # With a pattern any key may match, so nothing can be ruled out from the bytes.
        return _Action(action, step, requires=(a.key,) if regex is None else ())
    if action == "extract":
        if _value_sources(a):
            raise ValueError('action "extract" does not use "value", "from_attribute" or "from_context"')
        if not a.pattern:
            raise ValueError('action "extract" needs "pattern"')
        regex = _checked_pattern(a.pattern)
        if not regex.groupindex:
            raise ValueError(f'"pattern" {a.pattern!r} has no named group (?P<name>...) to extract into')
        if len(regex.groupindex) != regex.groups:
            raise ValueError(f'"pattern" {a.pattern!r} has an unnamed group; name every group or use (?:...)')
        names = tuple(sorted(regex.groupindex, key=regex.groupindex.__getitem__))
        return _Action(action, _extract_step(a.key, regex, names), requires=(a.key,), creates=names)
    # convert
    if _value_sources(a) or a.pattern:
        raise ValueError('action "convert" does not use "value", "from_attribute", "from_context" or "pattern"')
    if not a.converted_type:
        raise ValueError('action "convert" needs "converted_type" (int, double or string)')
    if a.converted_type not in CONVERTED_TYPES:
        raise ValueError(f'invalid "converted_type" {a.converted_type!r} (use int, double or string)')
    return _Action(action, _convert_step(a.key, a.converted_type), requires=(a.key,))


def _checked_pattern(pattern: str) -> re.Pattern[str]:
    try:
        return compile_pattern(pattern)
    except ValueError as exc:
        raise ValueError(f'invalid "pattern" {pattern!r}: {exc}') from None


def _config_value(raw: Any, field: str) -> AnyValue:
    try:
        return anyvalue_from_raw(raw)
    except ValueError as exc:
        raise ValueError(f'"{field}": {exc}') from None


def _compile_set(a: ActionKeyValue, action: str) -> _Action:
    sources = _value_sources(a)
    if sources > 1:
        raise ValueError(f'action "{action}" takes only one of "value", "from_attribute" and "from_context"')
    if a.pattern:
        raise ValueError(f'action "{action}" does not use "pattern"')
    default = None if a.default_value is None else _config_value(a.default_value, "default_value")
    value = a.value
    if isinstance(value, str) and value == "" and default is not None:
        # ``value: ${ENV}`` with the variable unset expands to nothing; the stock collector
        # then has no value and falls back to default_value, and so do we.
        value = None
    if sources == 0 and default is None:
        raise ValueError(
            f'action "{action}" needs one of "value", "from_attribute", "from_context" or "default_value"'
        )
    make = {"insert": _insert_step, "update": _update_step, "upsert": _upsert_step}[action]
    key = a.key
    appends = action != "update"
    if a.from_context:
        _check_context_key(a.from_context)

        def with_value(found: AnyValue | None) -> tuple[Step, KeyValue | None] | None:
            chosen = found if found is not None else default
            if chosen is None:
                return None
            return make(key, chosen, "", None), _new_kv(key, chosen) if appends else None

        return _Action(
            action,
            None,
            requires=(key,) if action == "update" else (),
            creates=(key,),
            context_key=a.from_context,
            with_value=with_value,
        )
    if a.from_attribute:
        step = make(key, None, a.from_attribute, default)
        if default is not None:
            return _Action(action, step, creates=(key,))
        needs = (key, a.from_attribute) if action == "update" else (a.from_attribute,)
        return _Action(action, step, requires=needs, creates=(key,))
    static = _config_value(value, "value") if value is not None else default
    assert static is not None
    return _Action(
        action,
        make(key, static, "", None),
        requires=() if appends else (key,),
        creates=(key,),
        adds=_new_kv(key, static) if appends else None,
    )


def _check_context_key(name: str) -> None:
    if name.startswith("auth."):
        raise ValueError(
            f'from_context {name!r}: authentication attributes are not available in AppGuard '
            '(authenticators attach none); use "metadata.<header>" or "client.address"'
        )
    if name == "metadata." or not name.strip():
        raise ValueError(f"from_context {name!r}: name a metadata key, as metadata.<key>")


# --- steps -----------------------------------------------------------------------------------
# Keys should be unique in an attribute list, but OTLP cannot enforce it: steps that change or
# remove a key act on every occurrence (so a redaction is complete), steps that add a key never
# add one that is present.


def _indexes(keys: list[str], key: str) -> Sequence[int]:
    """Where ``key`` is in ``keys``; the usual single occurrence found at C speed."""
    n = keys.count(key)
    if n == 0:
        return ()
    if n == 1:
        return (keys.index(key),)
    return [i for i, k in enumerate(keys) if k == key]


def _new_kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def _insert_step(key: str, static: AnyValue | None, source: str, default: AnyValue | None) -> Step:
    if static is not None:
        prebuilt = _new_kv(key, static)

        def insert_value(attrs: KeyValues, keys: list[str]) -> bool:
            if key in keys:
                return False
            attrs.append(prebuilt)  # append copies the message
            keys.append(key)
            return True

        return insert_value

    fallback = None if default is None else _new_kv(key, default)

    def insert_from(attrs: KeyValues, keys: list[str]) -> bool:
        if key in keys:
            return False
        if source in keys:
            src = attrs[keys.index(source)].value
            kv = attrs.add()
            kv.key = key
            kv.value.CopyFrom(src)
        elif fallback is not None:
            attrs.append(fallback)
        else:
            return False
        keys.append(key)
        return True

    return insert_from


def _update_step(key: str, static: AnyValue | None, source: str, default: AnyValue | None) -> Step:
    if static is not None:
        value = static

        def update_value(attrs: KeyValues, keys: list[str]) -> bool:
            found = _indexes(keys, key)
            for i in found:
                attrs[i].value.CopyFrom(value)
            return bool(found)

        return update_value

    def update_from(attrs: KeyValues, keys: list[str]) -> bool:
        if key not in keys or key == source:
            return False
        if source in keys:
            src = attrs[keys.index(source)].value
        elif default is not None:
            src = default
        else:
            return False
        for i in _indexes(keys, key):
            attrs[i].value.CopyFrom(src)
        return True

    return update_from


def _upsert_step(key: str, static: AnyValue | None, source: str, default: AnyValue | None) -> Step:
    update = _update_step(key, static, source, default)
    insert = _insert_step(key, static, source, default)

    def upsert(attrs: KeyValues, keys: list[str]) -> bool:
        return update(attrs, keys) if key in keys else insert(attrs, keys)

    return upsert


def _delete_step(key: str, regex: re.Pattern[str] | None) -> Step:
    if regex is None:

        def delete_key(attrs: KeyValues, keys: list[str]) -> bool:
            found = _indexes(keys, key)
            for i in reversed(found):
                del attrs[i]
                del keys[i]
            return bool(found)

        return delete_key

    search = regex.search

    def delete_matching(attrs: KeyValues, keys: list[str]) -> bool:
        changed = False
        for i in range(len(keys) - 1, -1, -1):
            k = keys[i]
            if k == key or search(k):
                del attrs[i]
                del keys[i]
                changed = True
        return changed

    return delete_matching


def _hash_step(key: str, regex: re.Pattern[str] | None) -> Step:
    if regex is None:

        def hash_key(attrs: KeyValues, keys: list[str]) -> bool:
            found = _indexes(keys, key)
            for i in found:
                value = attrs[i].value
                value.string_value = hash_value(value)
            return bool(found)

        return hash_key

    search = regex.search

    def hash_matching(attrs: KeyValues, keys: list[str]) -> bool:
        changed = False
        for i, k in enumerate(keys):
            if k == key or search(k):
                value = attrs[i].value
                value.string_value = hash_value(value)
                changed = True
        return changed

    return hash_matching


def _extract_step(key: str, regex: re.Pattern[str], names: tuple[str, ...]) -> Step:
    search = regex.search

    def extract(attrs: KeyValues, keys: list[str]) -> bool:
        if key not in keys:
            return False
        value = attrs[keys.index(key)].value
        if value.WhichOneof("value") != "string_value":
            return False
        match = search(value.string_value)
        if match is None:
            return False
        for name in names:
            text = match.group(name) or ""
            if name in keys:
                for i in _indexes(keys, name):
                    attrs[i].value.string_value = text
            else:
                kv = attrs.add()
                kv.key = name
                kv.value.string_value = text
                keys.append(name)
        return True

    return extract


def _convert_step(key: str, to: str) -> Step:
    def convert(attrs: KeyValues, keys: list[str]) -> bool:
        changed = False
        for i in _indexes(keys, key):
            if convert_value(attrs[i].value, to):
                changed = True
        return changed

    return convert


# --- the engine ------------------------------------------------------------------------------


def context_value(name: str, metadata: Mapping[str, Sequence[str]], client_address: str | None) -> AnyValue | None:
    """The ``from_context`` value for one request, or ``None`` when it has none.

    ``client.address`` is the client's IP address; ``metadata.<key>`` (or, as in the stock
    collector, a bare key) the request metadata, several values joined with ``;``.
    """
    if name == "client.address":
        ip = client_ip(client_address)
        return None if ip is None else AnyValue(string_value=ip)
    key = name[len("metadata.") :] if name.startswith("metadata.") else name
    values = metadata.get(key.lower())
    if not values:
        return None
    return AnyValue(string_value=";".join(values))


def client_ip(address: str | None) -> str | None:
    """The IP address in ``address`` (``ip``, ``ip:port``, ``[v6]:port``, gRPC ``ipv4:ip:port``)."""
    if not address:
        return None
    text = address
    for prefix in ("ipv4:", "ipv6:"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if text.startswith("["):
        host = text[1 : text.find("]")] if "]" in text else text[1:]
    else:
        host = text.rpartition(":")[0] if text.count(":") == 1 else text
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host or None


class AttrProc:
    """A compiled action list, applied in order to attribute lists."""

    def __init__(self, actions: Iterable[ActionKeyValue]) -> None:
        self.actions = [a.compiled for a in actions]

    def bind(
        self,
        *,
        metadata: Mapping[str, Sequence[str]] | None = None,
        client_address: str | None = None,
        raw: bytes | None = None,
    ) -> Applier | None:
        """The function to run on each attribute list of one request, or ``None`` for no-op.

        ``raw``, the request's bytes when they are at hand, lets actions whose keys occur
        nowhere in the request be left out: a key absent from the bytes is absent from every
        attribute list.
        """
        plan: list[tuple[Step, KeyValue | None]] = []
        created: set[str] = set()
        for action in self.actions:
            if raw is not None and not all(k in created or k.encode("utf-8") in raw for k in action.requires):
                continue
            step, adds = action.step, action.adds
            if action.with_value is not None:
                resolved = action.with_value(context_value(action.context_key, metadata or {}, client_address))
                if resolved is None:
                    continue
                step, adds = resolved
            assert step is not None
            # An insert or upsert of a key found nowhere in the request just appends.
            if adds is not None and (raw is None or adds.key in created or adds.key.encode("utf-8") in raw):
                adds = None
            plan.append((step, adds))
            created.update(action.creates)
        return _applier(plan)


def _applier(plan: list[tuple[Step, KeyValue | None]]) -> Applier | None:
    """One function for the whole action list.

    The item's keys are read (one wrapper per attribute, the costly part) only when a step
    needs them, and then once for all the steps after it.
    """
    if not plan:
        return None
    if all(adds is not None for _, adds in plan):
        appended = [adds for _, adds in plan if adds is not None]

        def append_all(attrs: KeyValues) -> bool:
            for kv in appended:
                attrs.append(kv)
            return True

        return append_all
    if len(plan) == 1:
        only = plan[0][0]

        def apply_one(attrs: KeyValues) -> bool:
            return only(attrs, [kv.key for kv in attrs])

        return apply_one

    def apply_all(attrs: KeyValues) -> bool:
        keys: list[str] | None = None
        changed = False
        for step, adds in plan:
            if adds is not None:
                attrs.append(adds)
                if keys is not None:
                    keys.append(adds.key)
                changed = True
                continue
            if keys is None:
                keys = [kv.key for kv in attrs]
            if step(attrs, keys):
                changed = True
        return changed

    return apply_all


def edit_in_place(payload: Payload, edit: Callable[[ExportRequest], bool]) -> None:
    """Run ``edit`` on the payload's message; if it changed anything, detach the bytes.

    Editing first and calling :meth:`Payload.mutable` after lets a request that needed no
    change keep the bytes it arrived as (an OTLP exporter then sends them without encoding
    again). The payload belongs to this processor alone (fan-out copies for mutating
    consumers) and nothing reads it in between, so the order is safe; on an error the bytes
    are dropped too, since part of the edit may have happened.
    """
    try:
        changed = edit(payload.message)
    except BaseException:
        payload.mutable()
        raise
    if changed:
        payload.mutable()
