"""Fingerprint exceptions into issues, the way a mature error tracker does.

Every event gets up to two hashes; the store files it under an existing issue when either one
is already known:

- the **primary** hash covers the exception types of the whole chain and the application's own
  (in-app) frames: module or file name and function, never line or column numbers, with
  compiler-generated names (lambda numbering, closures, proxies, async state machines)
  normalized; Python frames also contribute their source line, as Sentry's do;
- the **secondary** hash covers the same with *all* frames, so that a later change of what
  counts as in-app does not split existing issues.

Without in-app frames the primary hash is the all-frames one; without usable frames at all it
is the exception types plus their messages parameterized by :mod:`.normalize`.

A fingerprint given by the application (the ``appguard.fingerprint`` attribute) or by a
server-side rule (:class:`FingerprintRule`) replaces that default; ``{{ default }}`` inside it
stands for the default hash. Rules win over the application's fingerprint.

:class:`Grouper` is the entry point: it parses, applies in-app rules, fingerprints, and makes
the issue's title, culprit and metadata, keeping a bounded cache of recent results since the
same stack trace tends to arrive many times.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field, PrivateAttr, field_validator, model_validator

from collector.configtypes import ComponentConfig
from exporters.errors.normalize import normalize_message
from exporters.errors.stacktrace import (
    DEFAULT_IN_APP,
    ExceptionInfo,
    Frame,
    InAppRules,
    ParsedStacktrace,
    parse_stacktrace,
)

#: Attribute through which an application sets its own fingerprint (a list of strings).
FINGERPRINT_ATTRIBUTE = "appguard.fingerprint"
DEFAULT_VARIABLE = "{{ default }}"
TITLE_MAX_CHARS = 200
# Source lines longer than this are not trusted for grouping (minified or generated code).
_CONTEXT_LINE_MAX = 120

# --------------------------------------------------------------------------- name normalization

_Sub = tuple[re.Pattern[str], str]


def _subs(*pairs: tuple[str, str]) -> tuple[_Sub, ...]:
    return tuple((re.compile(pattern), replacement) for pattern, replacement in pairs)


_JAVA_MODULE_SUBS = _subs(
    # Hidden lambda classes: '$$Lambda$123/0x0000000800c0b448' (JDK 9-17), '$$Lambda/0x...' (21+),
    # '$$Lambda$12/1234567' (8).
    (r"\$\$Lambda(?:\$\d+)?(?:/(?:0x)?[0-9a-fA-F]+)?", "$$Lambda"),
    # CGLIB proxies: Spring 5's '$$EnhancerBySpringCGLIB$$5f3b2e1a' and Spring 6's
    # '$$SpringCGLIB$$0' are the same proxy of the same class.
    (r"\$\$(?:EnhancerBySpringCGLIB|EnhancerByCGLIB|SpringCGLIB)\$\$[0-9a-fA-F]+(?:_\d+)?", "$$CGLIB"),
    (r"\$\$(?:FastClassBySpringCGLIB|FastClassByCGLIB)\$\$[0-9a-fA-F]+(?:_\d+)?", "$$FastClassCGLIB"),
    (r"\$HibernateProxy\$\w+", "$HibernateProxy"),
    (r"\$(ByteBuddy|MockitoMock)\$\w+", r"$\1"),
    (r"_\$\$_javassist(?:_seam)?_\d+", "_$$_javassist"),
    (r"\$Proxy\d+", "$Proxy"),
    (r"^jdk\.proxy\d+\.", "jdk.proxy."),
    (r"(Generated(?:Serialization)?(?:Method|Constructor)Accessor)\d+", r"\1"),
    (r"\$lambda[-$]\d+", "$lambda"),
    (r"\$fn__\d+", "$fn"),
    # Anonymous inner classes are numbered by their order in the source file.
    (r"\$\d+(?=\$|$)", "$<n>"),
)
_JAVA_FUNCTION_SUBS = _subs(
    (r"^lambda\$(.*?)\$\d+$", r"lambda$\1"),
    (r"^access\$\d+$", "access$"),
    (r"\$lambda[-$]\d+", "$lambda"),
)
_DOTNET_SUBS = _subs(
    (r"<>c__DisplayClass\d+(?:_\d+)?", "<>c__DisplayClass"),
    (r">b__\d+(?:_\d+)?", ">b__"),
    (r">d__\d+", ">d__"),
    (r">g__(\w+)\|\d+(?:_\d+)?", r">g__\1"),
    (r"^lambda_method\d+$", "lambda_method"),
    (r"Proxy(?:_\d+)+$", "Proxy"),
)
_GO_FUNCTION_SUBS = _subs(
    (r"\.func\d+(?:\.\d+)*", ".func"),
    (r"\.(gowrap|deferwrap)\d+", r".\1"),
)
_RUBY_FUNCTION_SUBS = _subs(
    (r"^block \(\d+ levels\) in ", "block in "),
    # Ruby 3.4 qualifies methods ('User#save', 'block in UsersController#create'); older
    # versions do not: keep the method name only, so an upgrade does not split issues.
    (r"^((?:block|rescue|ensure) in )?[A-Z][\w:]*[#.](?=[^#.]+$)", r"\1"),
    (r"__-?\d{3,}_-?\d{3,}$", ""),
)
_JS_FILE_SUBS = _subs(
    # Content-hashed bundle names: main.3f2a1b9c.js, index-B7xK2m9Q.js, 123.8e0d62a1.chunk.js.
    (r"[.-](?=[A-Za-z0-9_]*\d)[A-Za-z0-9_]{6,32}(?=\.(?:chunk\.|bundle\.|min\.)?m?[jt]sx?$)", ""),
)
_JS_PSEUDO_FILES = frozenset({"<anonymous>", "native", "[native code]", "eval code", "<unknown>"})


def _apply(subs: tuple[_Sub, ...], text: str) -> str:
    for pattern, replacement in subs:
        text = pattern.sub(replacement, text)
    return text


def normalize_function(language: str | None, function: str | None) -> str:
    """A frame's function name with compiler-generated numbering removed."""
    if not function:
        return ""
    if language == "java":
        return _apply(_JAVA_FUNCTION_SUBS, function) if "$" in function else function
    if language == "dotnet":
        return _apply(_DOTNET_SUBS, function) if ("__" in function or "lambda_method" in function) else function
    if language == "go":
        return _apply(_GO_FUNCTION_SUBS, function) if "wrap" in function or ".func" in function else function
    if language == "ruby":
        return (
            _apply(_RUBY_FUNCTION_SUBS, function)
            if ("block (" in function or "#" in function or "." in function or "__" in function)
            else function
        )
    if language == "javascript":
        # V8 prints a nameless function as '<anonymous>', Sentry's JavaScript SDKs as '?'.
        if function in ("?", "<anonymous>"):
            return ""
        if function.endswith(".?"):
            return function[:-1] + "<anonymous>"
    return function


def normalize_module(language: str | None, module: str | None) -> str:
    """A frame's module (class, type, package) with generated-class suffixes removed."""
    if not module:
        return ""
    if language == "java":
        return (
            _apply(_JAVA_MODULE_SUBS, module)
            if ("$" in module or module.startswith("jdk.") or "Accessor" in module)
            else module
        )
    if language == "dotnet":
        return _apply(_DOTNET_SUBS, module) if ("__" in module or "Proxy" in module) else module
    return module


def _frame_key(language: str | None, frame: Frame) -> str:
    path = frame.filename or frame.abs_path or ""
    # JavaScript modules are named by some SDKs only (Sentry's Node.js SDK derives one from the
    # file's path): the file itself is what every report of a frame has in common.
    module = normalize_module(language, frame.module) if language != "javascript" or not path else ""
    if module:
        return module
    if not path:
        return ""
    if language == "javascript" and (path in _JS_PSEUDO_FILES or path.startswith("index ")):
        return ""
    cut = max(path.rfind("/"), path.rfind("\\"))
    name = (path[cut + 1 :] if cut >= 0 else path).lower()
    if language == "javascript":
        name = _apply(_JS_FILE_SUBS, name)
    return name


_COMPONENT_MEMO: dict[tuple[str | None, str | None, str | None, str | None, str | None, str | None], str | None] = {}
_COMPONENT_MEMO_SIZE = 65536


def frame_component(language: str | None, frame: Frame) -> str | None:
    """The text a frame contributes to a hash, or None for a frame too vague to count."""
    memo_key = (
        language,
        frame.module,
        frame.filename,
        frame.abs_path,
        frame.function,
        frame.context_line if language == "python" else None,
    )
    try:
        return _COMPONENT_MEMO[memo_key]
    except KeyError:
        pass
    component = _frame_component(language, frame)
    if len(_COMPONENT_MEMO) >= _COMPONENT_MEMO_SIZE:
        _COMPONENT_MEMO.clear()
    _COMPONENT_MEMO[memo_key] = component
    return component


def _frame_component(language: str | None, frame: Frame) -> str | None:
    key = _frame_key(language, frame)
    function = normalize_function(language, frame.function)
    if not key and not function:
        return None
    context = ""
    if language == "python" and frame.context_line:
        line = " ".join(frame.context_line.split())
        if len(line) <= _CONTEXT_LINE_MAX:
            context = line
    return f"{key}\x1f{function}\x1f{context}"


# --------------------------------------------------------------------------- default hashes


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()


def _grouped_exceptions(parsed: ParsedStacktrace) -> list[ExceptionInfo]:
    # Suppressed exceptions (Java's close() failures and the like) are incidental.
    return [e for e in parsed.exceptions if e.relation != "suppressed"]


@dataclass(frozen=True, slots=True)
class DefaultHashes:
    """The default fingerprint of an event: primary and (if different) secondary hash."""

    primary: str
    secondary: str | None
    #: what the primary hash is made of: "app" (in-app frames), "system" (all frames),
    #: "message" (types and parameterized messages) or "empty"
    basis: str


def default_hashes(parsed: ParsedStacktrace) -> DefaultHashes:
    """Compute the default primary and secondary hash of a parsed exception chain."""
    language = parsed.language
    app_parts: list[str] = []
    system_parts: list[str] = []
    app_frames = system_frames = 0
    exceptions = _grouped_exceptions(parsed)
    for exc in exceptions:
        header = f"type\x1f{exc.type or ''}"
        app_parts.append(header)
        system_parts.append(header)
        previous_app: str | None = None
        previous_system: str | None = None
        for frame in exc.frames:
            component = frame_component(language, frame)
            if component is None:
                continue
            # Consecutive identical frames are recursion: their depth must not matter.
            if component != previous_system:
                system_parts.append(component)
                system_frames += 1
                previous_system = component
            if frame.in_app and component != previous_app:
                app_parts.append(component)
                app_frames += 1
                previous_app = component
    system_hash = _md5("system\n" + "\n".join(system_parts)) if system_frames else None
    if app_frames:
        return DefaultHashes(_md5("app\n" + "\n".join(app_parts)), system_hash, "app")
    if system_hash is not None:
        return DefaultHashes(system_hash, None, "system")
    if not exceptions:
        return DefaultHashes(_md5("empty"), None, "empty")
    message_parts = [f"{e.type or ''}\x1f{normalize_message(e.value)}" for e in exceptions]
    return DefaultHashes(_md5("message\n" + "\n".join(message_parts)), None, "message")


# --------------------------------------------------------------------------- rules


def _compile_pattern(pattern: str, *, ignore_case: bool) -> re.Pattern[str]:
    if pattern.startswith("re:"):
        return re.compile(pattern[3:])
    return re.compile(fnmatch.translate(pattern), re.IGNORECASE if ignore_case else 0)


def _check_pattern(value: str | None) -> str | None:
    if value is not None and value.startswith("re:"):
        try:
            re.compile(value[3:])
        except re.error as err:
            raise ValueError(f"not a valid regular expression: {err}") from err
    return value


class FingerprintMatch(ComponentConfig):
    """Conditions of a fingerprint rule; all given ones must hold.

    Each value is a glob (``*``, ``?``, ``[...]``) matched against the whole text, or a regular
    expression searched in it when written ``re:<expression>``. ``message`` globs ignore case.
    """

    type: str | None = None
    message: str | None = None
    module: str | None = None
    function: str | None = None
    service: str | None = None

    # key -> (compiled pattern, whether it is searched (regex) rather than fully matched (glob))
    _compiled: dict[str, tuple[re.Pattern[str], bool]] = PrivateAttr(default_factory=dict)

    _check = field_validator("type", "message", "module", "function", "service")(_check_pattern)

    @model_validator(mode="after")
    def _at_least_one(self) -> FingerprintMatch:
        if all(getattr(self, key) is None for key in ("type", "message", "module", "function", "service")):
            raise ValueError("a match needs at least one of type, message, module, function, service")
        return self

    def model_post_init(self, context: Any, /) -> None:
        """Compile the patterns once."""
        for key in ("type", "message", "module", "function", "service"):
            value = getattr(self, key)
            if value is not None:
                self._compiled[key] = (_compile_pattern(value, ignore_case=key == "message"), value.startswith("re:"))

    def matches(self, parsed: ParsedStacktrace, service: str | None) -> bool:
        """Whether an event (its parsed exceptions and its service) meets every condition."""
        compiled = self._compiled
        exceptions = _grouped_exceptions(parsed)

        def hit(key: str, values: Sequence[str | None]) -> bool:
            pattern, use_search = compiled[key]
            for value in values:
                if value is None:
                    continue
                if (pattern.search(value) if use_search else pattern.match(value)) is not None:
                    return True
            return False

        if "service" in compiled and not hit("service", [service]):
            return False
        if "type" in compiled and not hit("type", [e.type for e in exceptions]):
            return False
        if "message" in compiled and not hit("message", [e.value for e in exceptions]):
            return False
        frames = [f for e in exceptions for f in e.frames]
        if "module" in compiled and not hit("module", [f.module or f.abs_path or f.filename for f in frames]):
            return False
        return not ("function" in compiled and not hit("function", [f.function for f in frames]))


class FingerprintRule(ComponentConfig):
    """A server-side rule: events that match get ``fingerprint`` (and optionally ``title``)."""

    match: FingerprintMatch
    fingerprint: list[str] = Field(min_length=1)
    title: str | None = None


class GroupingConfig(ComponentConfig):
    """Grouping settings an exporter embeds: in-app prefixes and fingerprint rules."""

    in_app_include: list[str] = Field(default_factory=list)
    in_app_exclude: list[str] = Field(default_factory=list)
    fingerprint_rules: list[FingerprintRule] = Field(default_factory=list)


# --------------------------------------------------------------------------- result


@dataclass(frozen=True, slots=True)
class GroupingResult:
    """What the store needs to file an event under an issue.

    ``hashes`` lists every hash the event answers to, primary first; the store attaches the
    event to the issue that already owns any of them (and records the others for it). The
    ``stacktrace`` and ``metadata`` are shared with the grouper's cache: treat them as read-only.
    """

    hashes: tuple[str, ...]
    title: str
    culprit: str | None
    metadata: dict[str, Any]
    stacktrace: ParsedStacktrace
    fingerprint: tuple[str, ...] | None = None

    @property
    def primary_hash(self) -> str:
        """The hash a new issue is created under."""
        return self.hashes[0]

    @property
    def secondary_hash(self) -> str | None:
        """The all-frames hash when it differs from the primary one, else None."""
        return self.hashes[1] if len(self.hashes) > 1 else None


_VARIABLE = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")


def _culprit_frame(exceptions: Sequence[ExceptionInfo]) -> Frame | None:
    for exc in reversed(exceptions):
        for frame in reversed(exc.frames):
            if frame.in_app:
                return frame
    primary = exceptions[-1] if exceptions else None
    return primary.frames[-1] if primary is not None and primary.frames else None


def _first_line(text: str | None) -> str:
    if not text:
        return ""
    return text.strip().split("\n", 1)[0].strip()


def _truncate(text: str, limit: int = TITLE_MAX_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def make_title(exc: ExceptionInfo | None) -> str:
    """``Type: first line of the message``, truncated; ``<unknown>`` when there is nothing."""
    if exc is None:
        return "<unknown>"
    message = _first_line(exc.value)
    if exc.type and message:
        return _truncate(f"{exc.type}: {message}")
    return _truncate(exc.type or message or "<unknown>")


def make_culprit(language: str | None, frame: Frame | None) -> str | None:
    """``module in function`` for the most relevant frame, as trackers show under the title."""
    if frame is None:
        return None
    where = frame.module or frame.filename or frame.abs_path or ""
    function = frame.function or ""
    if where and function:
        return _truncate(f"{where} in {function}")
    return _truncate(where or function) or None


# --------------------------------------------------------------------------- grouper


class Grouper:
    """Parse, fingerprint and describe error events; keeps a bounded cache of recent results.

    ``cache_size=0`` disables the cache. The cache key is every input of :meth:`group`, so a
    hit returns exactly what a fresh computation would.
    """

    def __init__(self, config: GroupingConfig | None = None, *, cache_size: int = 4096) -> None:
        self.config = config or GroupingConfig()
        self.in_app = (
            InAppRules(tuple(self.config.in_app_include), tuple(self.config.in_app_exclude))
            if self.config.in_app_include or self.config.in_app_exclude
            else DEFAULT_IN_APP
        )
        self.rules: tuple[FingerprintRule, ...] = tuple(self.config.fingerprint_rules)
        self._cache: dict[tuple[Any, ...], GroupingResult] = {}
        self._cache_size = cache_size

    def group(
        self,
        *,
        exc_type: str | None = None,
        message: str | None = None,
        stacktrace: str | None = None,
        language: str | None = None,
        fingerprint: Sequence[str] | str | None = None,
        service: str | None = None,
    ) -> GroupingResult:
        """Group one event from its ``exception.*`` attributes.

        ``language`` is the ``telemetry.sdk.language`` resource attribute (a hint for the
        parser), ``fingerprint`` the ``appguard.fingerprint`` attribute, ``service`` the
        ``service.name``.
        """
        client_fp = _as_fingerprint(fingerprint)
        key = (exc_type, message, stacktrace, language, client_fp, service)
        if self._cache_size:
            cached = self._cache.get(key)
            if cached is not None:
                return cached
        parsed = parse_stacktrace(
            stacktrace, language=language, exc_type=exc_type, exc_message=message, in_app=self.in_app
        )
        result = self._group(parsed, client_fp, service)
        if self._cache_size:
            if len(self._cache) >= self._cache_size:
                # Drop the oldest entry (dicts keep insertion order).
                del self._cache[next(iter(self._cache))]
            self._cache[key] = result
        return result

    def group_parsed(
        self,
        parsed: ParsedStacktrace,
        *,
        fingerprint: Sequence[str] | str | None = None,
        service: str | None = None,
        keep_given_in_app: bool = True,
    ) -> GroupingResult:
        """Group exceptions that arrive already structured (a Sentry envelope, for instance).

        With ``keep_given_in_app`` the frames keep the ``in_app`` marks they came with and only
        ``in_app_include`` / ``in_app_exclude`` prefixes change them; without it the built-in
        rules decide afresh.
        """
        self.in_app.apply(parsed, keep_given=keep_given_in_app)
        return self._group(parsed, _as_fingerprint(fingerprint), service)

    def _group(
        self, parsed: ParsedStacktrace, client_fp: tuple[str, ...] | None, service: str | None
    ) -> GroupingResult:
        defaults = default_hashes(parsed)
        exceptions = _grouped_exceptions(parsed)
        primary = exceptions[-1] if exceptions else parsed.primary
        culprit_frame = _culprit_frame(exceptions)
        title = make_title(primary)
        rule_index: int | None = None
        values: tuple[str, ...] | None = None
        for index, rule in enumerate(self.rules):
            if rule.match.matches(parsed, service):
                rule_index, values = index, tuple(rule.fingerprint)
                break
        source = defaults.basis
        if values is not None:
            source = "rule"
        elif client_fp is not None and client_fp != (DEFAULT_VARIABLE,):
            values, source = client_fp, "client"
        rule_title = self.rules[rule_index].title if rule_index is not None else None
        resolved: tuple[str, ...] | None = None
        if values is None:
            hashes: tuple[str, ...] = (defaults.primary,) + ((defaults.secondary,) if defaults.secondary else ())
        else:
            variables = _variables(parsed.language, primary, culprit_frame, service)
            resolved = tuple(_expand(v, variables) for v in values)
            if DEFAULT_VARIABLE in values:
                # One custom hash per default hash, so the secondary's stability carries over.
                bases = (defaults.primary,) + ((defaults.secondary,) if defaults.secondary else ())
                hashes = tuple(
                    _md5(
                        "fingerprint\n"
                        + "\n".join(base if v == DEFAULT_VARIABLE else r for v, r in zip(values, resolved, strict=True))
                    )
                    for base in bases
                )
            else:
                hashes = (_md5("fingerprint\n" + "\n".join(resolved)),)
            if rule_title:
                title = _truncate(_expand(rule_title, variables))
        metadata: dict[str, Any] = {
            "type": primary.type if primary else None,
            "value": _truncate(_first_line(primary.value if primary else None), 1024),
            "language": parsed.language,
            "grouping": source,
            "exceptions": len(parsed.exceptions),
            "frames": sum(len(e.frames) for e in parsed.exceptions),
            "in_app_frames": sum(1 for e in parsed.exceptions for f in e.frames if f.in_app),
        }
        if culprit_frame is not None:
            metadata["function"] = culprit_frame.function
            metadata["module"] = culprit_frame.module
            metadata["filename"] = culprit_frame.filename
            metadata["lineno"] = culprit_frame.lineno
        if rule_index is not None:
            metadata["fingerprint_rule"] = rule_index
        if parsed.truncated:
            metadata["truncated"] = True
        return GroupingResult(
            hashes=hashes,
            title=title,
            culprit=make_culprit(parsed.language, culprit_frame),
            metadata=metadata,
            stacktrace=parsed,
            fingerprint=resolved,
        )


def _variables(
    language: str | None, primary: ExceptionInfo | None, frame: Frame | None, service: str | None
) -> dict[str, str]:
    """Values of the ``{{ name }}`` variables a fingerprint or rule title may use."""
    variables = {
        "type": (primary.type if primary else None) or "",
        "message": normalize_message(primary.value if primary else None),
        "function": normalize_function(language, frame.function if frame else None),
        "module": _frame_key(language, frame) if frame else "",
        "service": service or "",
    }
    variables["error.type"] = variables["type"]
    variables["error.value"] = variables["message"]
    return variables


def _expand(value: str, variables: dict[str, str]) -> str:
    if "{{" not in value or value == DEFAULT_VARIABLE:
        return value
    return _VARIABLE.sub(lambda m: variables.get(m.group(1), m.group(0)), value)


def _as_fingerprint(value: Sequence[str] | str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,) if value else None
    items = tuple(str(v) for v in value if v is not None and str(v) != "")
    return items or None
