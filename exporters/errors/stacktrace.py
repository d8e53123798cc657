"""Parse stack trace text into exceptions and frames.

OpenTelemetry SDKs put a language's own rendering of an exception into the
``exception.stacktrace`` attribute: Python's ``traceback.format_exception``, a JavaScript
``Error.stack``, Java's ``printStackTrace``, Go's ``runtime/debug.Stack``, .NET's
``Exception.ToString()``, Ruby's ``full_message``. :func:`parse_stacktrace` turns any of them
into :class:`ParsedStacktrace`: a list of chained exceptions, each with its type, value and
frames, in the shape a Sentry event has:

- ``exceptions`` runs from the innermost cause to the exception that was reported, so
  ``exceptions[-1]`` is the one the title is made of;
- every exception's ``frames`` run from the oldest call to the newest (the raise point last);
- every frame carries ``in_app``, decided by :class:`InAppRules`.

Text that is no stack trace in a known format yields no frames (and is not an error). The work
is linear in the input: regular expressions are compiled once and anchored, lines longer than
:data:`MAX_LINE_CHARS` are cut before any matching, texts over :data:`MAX_TEXT_CHARS` keep their
head and tail, and frames and chained exceptions are capped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Texts longer than this keep their first three quarters and their last quarter (1 MiB).
MAX_TEXT_CHARS = 1 << 20
#: Longer lines are cut to this length before any pattern looks at them.
MAX_LINE_CHARS = 4096
#: Frames kept per exception: the oldest and the newest halves, the middle is counted as omitted.
MAX_FRAMES = 256
#: Exceptions kept per chain.
MAX_EXCEPTIONS = 32
#: Lines of source context kept per frame and side.
MAX_CONTEXT_LINES = 5
# Entries of the per-frame memo tables (in-app decisions, hash components).
_MEMO_SIZE = 65536

LANGUAGES = ("python", "javascript", "java", "go", "dotnet", "ruby")

# telemetry.sdk.language values (and a few common spellings) -> the parser to try first.
_HINTS = {
    "python": "python",
    "py": "python",
    "nodejs": "javascript",
    "node": "javascript",
    "javascript": "javascript",
    "js": "javascript",
    "webjs": "javascript",
    "typescript": "javascript",
    "browser": "javascript",
    "java": "java",
    "kotlin": "java",
    "scala": "java",
    "jvm": "java",
    "android": "java",
    "go": "go",
    "golang": "go",
    "dotnet": "dotnet",
    ".net": "dotnet",
    "csharp": "dotnet",
    "c#": "dotnet",
    "fsharp": "dotnet",
    "ruby": "ruby",
    "rb": "ruby",
}


@dataclass(slots=True)
class Frame:
    """One stack frame, with Sentry's field names.

    ``module`` is the dotted module, class or package the frame belongs to when the trace
    tells it (Java class, .NET type, Go package, Python module of a library file); otherwise
    grouping falls back on ``filename``.
    """

    function: str | None = None
    module: str | None = None
    filename: str | None = None
    abs_path: str | None = None
    lineno: int | None = None
    colno: int | None = None
    context_line: str | None = None
    pre_context: list[str] | None = None
    post_context: list[str] | None = None
    in_app: bool = False
    #: Why a minified JavaScript frame could not be mapped to its source (see ``symbolicate``).
    symbolication_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The frame as a JSON-ready dict with Sentry's keys; empty fields are left out."""
        # Spelled out rather than looped over getattr: four times faster, and the errors
        # exporter converts every frame of every event it stores.
        out: dict[str, Any] = {}
        if self.function is not None:
            out["function"] = self.function
        if self.module is not None:
            out["module"] = self.module
        if self.filename is not None:
            out["filename"] = self.filename
        if self.abs_path is not None:
            out["abs_path"] = self.abs_path
        if self.lineno is not None:
            out["lineno"] = self.lineno
        if self.colno is not None:
            out["colno"] = self.colno
        if self.context_line is not None:
            out["context_line"] = self.context_line
        if self.pre_context:
            out["pre_context"] = list(self.pre_context)
        if self.post_context:
            out["post_context"] = list(self.post_context)
        out["in_app"] = self.in_app
        if self.symbolication_error is not None:
            out["symbolication_error"] = self.symbolication_error
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], language: str | None = None) -> Frame:
        """Build a frame from a Sentry-style dict (unknown keys are ignored).

        A frame without ``in_app`` gets the built-in rules' decision for ``language``.
        """

        def text(key: str) -> str | None:
            value = data.get(key)
            return str(value)[:MAX_LINE_CHARS] if value is not None else None

        def number(key: str) -> int | None:
            value = data.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        def lines(key: str) -> list[str] | None:
            value = data.get(key)
            if not isinstance(value, list):
                return None
            return [str(v)[:MAX_LINE_CHARS] for v in value[:MAX_CONTEXT_LINES]]

        frame = cls(
            function=text("function"),
            module=text("module"),
            filename=text("filename"),
            abs_path=text("abs_path"),
            lineno=number("lineno"),
            colno=number("colno"),
            context_line=text("context_line"),
            pre_context=lines("pre_context"),
            post_context=lines("post_context"),
            in_app=bool(data.get("in_app", False)),
            symbolication_error=text("symbolication_error"),
        )
        if "in_app" not in data:
            frame.in_app = DEFAULT_IN_APP.is_in_app(frame, language)
        return frame


@dataclass(slots=True)
class ExceptionInfo:
    """One exception of a chain.

    ``relation`` tells how it is tied to the exception after it in the list: ``"cause"``
    (explicit cause, Java's ``Caused by``, Ruby's ``cause``), ``"context"`` (Python's "during
    handling"), ``"inner"`` (.NET inner exception), ``"group"`` (member of an exception group or
    aggregate), ``"suppressed"`` (Java's suppressed exceptions, which grouping ignores), or
    ``None`` for the reported exception.
    """

    type: str | None = None
    value: str | None = None
    frames: list[Frame] = field(default_factory=list)
    relation: str | None = None
    frames_omitted: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The exception as a JSON-ready dict with Sentry's keys."""
        out: dict[str, Any] = {"type": self.type, "value": self.value}
        if self.frames:
            out["stacktrace"] = {"frames": [f.to_dict() for f in self.frames]}
        if self.relation:
            out["relation"] = self.relation
        if self.frames_omitted:
            out["frames_omitted"] = self.frames_omitted
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], language: str | None = None) -> ExceptionInfo:
        """Build an exception from a Sentry-style dict (``stacktrace.frames`` oldest first)."""
        stack = data.get("stacktrace") or {}
        raw_frames = stack.get("frames") if isinstance(stack, Mapping) else None
        frames = (
            [Frame.from_dict(f, language) for f in raw_frames if isinstance(f, Mapping)]
            if isinstance(raw_frames, list)
            else []
        )
        exc = cls(
            type=str(data["type"]) if data.get("type") is not None else None,
            value=str(data["value"]) if data.get("value") is not None else None,
            frames=frames,
            relation=str(data["relation"]) if data.get("relation") else None,
        )
        _cap_frames(exc)
        return exc


@dataclass(slots=True)
class ParsedStacktrace:
    """The result of parsing: the exceptions (innermost cause first, reported one last)."""

    language: str | None = None
    exceptions: list[ExceptionInfo] = field(default_factory=list)
    truncated: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def primary(self) -> ExceptionInfo | None:
        """The reported exception (the last one), if any."""
        return self.exceptions[-1] if self.exceptions else None

    @property
    def has_frames(self) -> bool:
        """Whether any exception has at least one frame."""
        return any(e.frames for e in self.exceptions)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"language", "values": [...], "truncated", "notes"}``."""
        out: dict[str, Any] = {"language": self.language, "values": [e.to_dict() for e in self.exceptions]}
        if self.truncated:
            out["truncated"] = True
        if self.notes:
            out["notes"] = list(self.notes)
        return out


# --------------------------------------------------------------------------- in-app rules

# Python: installed packages and the standard library, wherever the interpreter lives.
_PY_STDLIB = re.compile(r"/lib(?:64)?/python\d+(?:\.\d+)?t?/|/python\d+/lib/", re.IGNORECASE)

# fmt: off
_JAVA_SYSTEM = (
    "java.", "javax.", "jakarta.", "sun.", "com.sun.", "jdk.", "kotlin.", "kotlinx.", "scala.",
    "groovy.", "org.codehaus.groovy.", "org.springframework.", "org.apache.", "com.fasterxml.",
    "io.netty.", "org.hibernate.", "com.google.", "reactor.", "io.reactivex.", "rx.",
    "io.micrometer.", "io.opentelemetry.", "org.eclipse.", "org.junit.", "junit.", "org.mockito.",
    "okhttp3.", "okio.", "retrofit2.", "com.zaxxer.", "org.slf4j.", "ch.qos.logback.",
    "org.postgresql.", "com.mysql.", "org.mariadb.", "io.grpc.", "io.undertow.", "org.glassfish.",
    "org.jboss.", "android.", "androidx.", "dalvik.", "com.android.", "akka.", "io.vertx.",
    "io.ktor.", "feign.", "net.bytebuddy.", "org.aspectj.", "io.lettuce.", "redis.clients.",
    "com.amazonaws.", "software.amazon.", "org.yaml.", "org.jooq.", "org.flywaydb.",
    "org.liquibase.", "liquibase.", "io.quarkus.", "io.micronaut.", "org.thymeleaf.",
    "org.gradle.", "worker.org.gradle.", "org.testng.", "io.dropwizard.", "com.codahale.",
    "io.github.resilience4j.", "org.elasticsearch.", "co.elastic.", "org.apache.kafka.",
)
_DOTNET_SYSTEM = (
    "System.", "Microsoft.", "Windows.", "Mono.", "Newtonsoft.", "Npgsql.", "Grpc.", "Google.",
    "Polly.", "Serilog.", "NLog.", "log4net.", "Castle.", "AutoMapper.", "MediatR.", "Dapper.",
    "StackExchange.", "Swashbuckle.", "FluentValidation.", "Pomelo.", "MySqlConnector.",
    "Hangfire.", "MassTransit.", "RabbitMQ.", "Confluent.", "Amazon.", "Azure.", "xunit.",
    "Xunit.", "NUnit.", "OpenTelemetry.", "Orleans.", "lambda_method",
)
_GO_SYSTEM_MODULES = (
    "golang.org/x/", "google.golang.org/", "go.opentelemetry.io/", "go.uber.org/", "gopkg.in/",
    "github.com/gin-gonic/", "github.com/labstack/echo", "github.com/gorilla/", "github.com/go-chi/",
    "github.com/jackc/", "github.com/lib/pq", "github.com/sirupsen/logrus", "github.com/stretchr/",
    "github.com/grpc-ecosystem/", "github.com/redis/go-redis", "github.com/go-redis/",
    "github.com/gofiber/", "github.com/valyala/", "github.com/spf13/", "github.com/rs/zerolog",
    "gorm.io/", "github.com/go-sql-driver/", "github.com/aws/", "cloud.google.com/go",
    "github.com/prometheus/", "github.com/julienschmidt/httprouter", "entgo.io/",
)
# fmt: on
_GO_ROOTS = ("/usr/local/go/src/", "/usr/lib/go/src/", "/usr/lib/golang/src/", "/opt/go/src/", "/usr/local/Cellar/go/")


def _python_system(frame: Frame) -> bool:
    path = frame.abs_path or frame.filename or ""
    if path.startswith("<"):
        # <frozen importlib._bootstrap>, <string> (dataclass- or exec-generated code), <stdin>...
        return True
    path = path.replace("\\", "/")
    if "/site-packages/" in path or "/dist-packages/" in path:
        return True
    return _PY_STDLIB.search(path) is not None


def _javascript_system(frame: Frame) -> bool:
    path = frame.abs_path or frame.filename or ""
    if not path:
        return True
    if "node_modules/" in path or "node_modules\\" in path:
        return True
    return path.startswith(
        (
            "node:",
            "internal/",
            "<anonymous>",
            "native",
            "[native code]",
            "index ",
            "webpack/bootstrap",
            "webpack:///webpack/",
        )
    )


def _java_system(frame: Frame) -> bool:
    return (frame.module or "").startswith(_JAVA_SYSTEM)


def _go_system(frame: Frame) -> bool:
    path = frame.abs_path or ""
    if "/pkg/mod/" in path or "/vendor/" in path or "@v" in path or path.startswith(_GO_ROOTS):
        return True
    module = frame.module or ""
    if not module:
        # Builtins such as 'panic' and 'goexit' have no package.
        return True
    if module.startswith(_GO_SYSTEM_MODULES):
        return True
    first = module.split("/", 1)[0]
    # The standard library's import paths have no dot in their first element; a program's
    # own packages are 'main' or live under a domain-like module path.
    return first != "main" and "." not in first


def _dotnet_system(frame: Frame) -> bool:
    module = frame.module or frame.function or ""
    if module.startswith(_DOTNET_SYSTEM):
        return True
    path = frame.abs_path or ""
    # Framework assemblies are built with SourceLink paths under /_/.
    return path.startswith("/_/")


_RUBY_STDLIB = re.compile(r"/lib/ruby/(?:\d|site_ruby|vendor_ruby)")


def _ruby_system(frame: Frame) -> bool:
    path = frame.abs_path or frame.filename or ""
    if path.startswith("<internal:"):
        return True
    if "/gems/" in path or "/vendor/bundle/" in path or "/rubygems" in path or "/.rbenv/" in path or "/.rvm/" in path:
        return True
    return _RUBY_STDLIB.search(path) is not None


_SYSTEM_RULES = {
    "python": _python_system,
    "javascript": _javascript_system,
    "java": _java_system,
    "go": _go_system,
    "dotnet": _dotnet_system,
    "ruby": _ruby_system,
}


@dataclass(frozen=True)
class InAppRules:
    """Which frames are the application's own.

    Built-in rules per language mark libraries, runtimes and standard libraries as not in-app.
    ``include`` and ``exclude`` are prefixes matched against a frame's module, absolute path and
    filename; they override the built-in rules, the longest matching prefix deciding.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    # Decisions already taken, per (language, module, abs_path, filename): the same frames come
    # back event after event. Bounded by clearing when full.
    _memo: dict[tuple[str | None, str | None, str | None, str | None], bool] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    def override(self, frame: Frame) -> bool | None:
        """The decision of the ``include`` / ``exclude`` prefixes alone, or None if none matches.

        The longest matching prefix decides, so ``exclude: [com.acme.generated.]`` carves a
        hole into ``include: [com.acme.]``; on a tie ``include`` wins.
        """
        if not self.include and not self.exclude:
            return None
        candidates = [c for c in (frame.module, frame.abs_path, frame.filename) if c]
        best_include = max((len(p) for p in self.include for c in candidates if c.startswith(p)), default=-1)
        best_exclude = max((len(p) for p in self.exclude for c in candidates if c.startswith(p)), default=-1)
        if best_include < 0 and best_exclude < 0:
            return None
        return best_include >= best_exclude

    def is_in_app(self, frame: Frame, language: str | None) -> bool:
        """Decide ``frame.in_app`` for a frame of ``language``."""
        key = (language, frame.module, frame.abs_path, frame.filename)
        memo = self._memo
        decided = memo.get(key)
        if decided is None:
            decided = self.override(frame)
            if decided is None:
                rule = _SYSTEM_RULES.get(language or "")
                decided = not rule(frame) if rule is not None else True
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            memo[key] = decided
        return decided

    def apply(self, parsed: ParsedStacktrace, *, keep_given: bool = False) -> None:
        """Set ``in_app`` on every frame of ``parsed``.

        With ``keep_given`` the marks already on the frames (an SDK's own decision, as Sentry
        events carry) stand, and only the ``include`` / ``exclude`` prefixes change them.
        """
        for exc in parsed.exceptions:
            for frame in exc.frames:
                if keep_given:
                    decided = self.override(frame)
                    if decided is not None:
                        frame.in_app = decided
                else:
                    frame.in_app = self.is_in_app(frame, parsed.language)


DEFAULT_IN_APP = InAppRules()

# --------------------------------------------------------------------------- helpers


def _cap_frames(exc: ExceptionInfo) -> None:
    frames = exc.frames
    if len(frames) > MAX_FRAMES:
        half = MAX_FRAMES // 2
        exc.frames_omitted += len(frames) - MAX_FRAMES
        exc.frames = frames[:half] + frames[-half:]


def _to_int(text: str | None) -> int | None:
    if text and text.isdigit() and len(text) < 10:
        return int(text)
    return None


def _basename(path: str) -> str:
    cut = max(path.rfind("/"), path.rfind("\\"))
    return path[cut + 1 :] if cut >= 0 else path


def _split_location(loc: str) -> tuple[str, int | None, int | None]:
    """``path:line:col`` / ``path:line`` / ``path`` -> its parts, without backtracking."""
    head, sep, tail = loc.rpartition(":")
    if sep and tail.isdigit():
        head2, sep2, tail2 = head.rpartition(":")
        if sep2 and tail2.isdigit():
            return head2, _to_int(tail2), _to_int(tail)
        return head, _to_int(tail), None
    return loc, None, None


def _url_path(location: str) -> str:
    """The path of a URL without scheme, host, query and fragment; other strings unchanged."""
    scheme_end = location.find("://")
    path = location
    if scheme_end > 0:
        slash = location.find("/", scheme_end + 3)
        path = location[slash:] if slash >= 0 else "/"
        if location.startswith("file://"):
            path = location[scheme_end + 3 :]
    for marker in ("?", "#"):
        cut = path.find(marker)
        if cut >= 0:
            path = path[:cut]
    return path


# --------------------------------------------------------------------------- detection

_JAVA_LOCATION = re.compile(
    r"\((?:[^()]*\.(?:java|kt|kts|scala|groovy|clj|aj)(?::\d+)?|Native Method|Unknown Source(?::\d+)?|Compiled Code)\)"
)
_JS_LINE_COL = re.compile(r":\d+:\d+\)?$")
_GECKO_LINE = re.compile(r"^[^@\s]*(?:\s[^@]*)?@.*:\d+(?::\d+)?$")
_RUBY_IN = re.compile(r":(\d+):in [`']")
_GO_FILE_LINE = re.compile(r"^\t[^\n]+\.(?:go|s):\d+(?: \+0x[0-9a-f]+)?$", re.MULTILINE)


def detect_language(text: str) -> str | None:
    """Guess the language a stack trace was written by.

    Each runtime prints a few markers no other one does (Python's ``Traceback``, Java's
    tab-indented ``at``, .NET's ``:line N``, Go's goroutine header); substring tests on the
    head of the text find them at C speed. Texts without such a marker are scored line by line.
    """
    head = text[:65536]
    if "Traceback (most recent call last)" in head or "Exception Group Traceback" in head:
        return "python"
    if (
        head.startswith("goroutine ")
        or "\ngoroutine " in head
        or (".go:" in head and "\n\t" in head and _GO_FILE_LINE.search(head))
    ):
        return "go"
    if " ---> " in head or "--- End of " in head or (":line " in head and " at " in head):
        return "dotnet"
    if "\tat " in head or "\nCaused by: " in head:
        return "java"
    if ":in `" in head or ":in '" in head:
        return "ruby"
    return _score_language(head)


def _score_language(text: str) -> str | None:
    scores = dict.fromkeys(LANGUAGES, 0)
    for count, raw in enumerate(text.splitlines()):
        if count >= 400:
            break
        line = raw[:MAX_LINE_CHARS]
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith('File "'):
            scores["python"] += 3
        elif stripped.startswith(("goroutine ", "created by ")) or _GO_FILE_LINE.match(line):
            scores["go"] += 3
        elif stripped.startswith("at "):
            if _JS_LINE_COL.search(stripped):
                scores["javascript"] += 2
            elif _JAVA_LOCATION.search(stripped):
                scores["java"] += 2
            elif stripped.endswith(")"):
                scores["dotnet"] += 1
        elif stripped.startswith(("Caused by: ", "Suppressed: ")) or (
            stripped.startswith("... ") and stripped.endswith(" more")
        ):
            scores["java"] += 2
        elif _RUBY_IN.search(stripped):
            scores["ruby"] += 2
        elif "@" in stripped and _GECKO_LINE.match(stripped):
            scores["javascript"] += 2
    best = max(scores, key=lambda k: scores[k])
    return best if scores[best] > 0 else None


# --------------------------------------------------------------------------- Python

_PY_FILE = re.compile(r'\s+File "(?P<path>[^"]*)", line (?P<line>\d+)(?:, in (?P<func>.+))?$')
_PY_HEADER = re.compile(r"(?P<type>[A-Za-z_][\w.]*)(?:: (?P<value>.*)|:)?$")
_PY_CAUSE = "The above exception was the direct cause of the following exception:"
_PY_CONTEXT = "During handling of the above exception, another exception occurred:"
_PY_TRACEBACK = "Traceback (most recent call last):"
_PY_MARKERS = frozenset(" ^~-")
_PY_GROUP_SEPARATOR = re.compile(r"\+(?:-\+)?-+ (?:\d+|\.\.\.) -+$")
_GROUP_MARK = "\x00group"


def _python_module(path: str) -> str | None:
    norm = path.replace("\\", "/")
    if norm.startswith("<frozen ") and norm.endswith(">"):
        return norm[8:-1]
    rel = None
    for marker in ("/site-packages/", "/dist-packages/"):
        cut = norm.rfind(marker)
        if cut >= 0:
            rel = norm[cut + len(marker) :]
            break
    if rel is None:
        match = _PY_STDLIB.search(norm)
        if match is None:
            return None
        rel = norm[match.end() :]
    if not rel.endswith(".py"):
        return None
    rel = rel[:-3].replace("/", ".")
    return rel[:-9] if rel.endswith(".__init__") else rel


def _flatten_python_groups(lines: list[str]) -> list[str]:
    """Turn Python 3.11+ exception-group boxes into plain tracebacks separated by markers.

    Every line of a group carries one border character: ``+`` on the header and separator
    lines, ``| `` before the content, which keeps its own indentation.
    """
    out: list[str] = []
    for line in lines:
        stripped = line.lstrip()
        if stripped.startswith("+"):
            if "Exception Group Traceback" in stripped:
                out.append(_PY_TRACEBACK)
            elif _PY_GROUP_SEPARATOR.match(stripped):
                out.append(_GROUP_MARK)
            continue
        if stripped.startswith("|"):
            content = stripped[2:] if stripped.startswith("| ") else stripped[1:]
            out.append(_PY_TRACEBACK if content.startswith("Exception Group Traceback") else content)
            continue
        out.append(line)
    return out


def _parse_python(lines: list[str]) -> list[ExceptionInfo]:
    if any("Exception Group Traceback" in line for line in lines):
        lines = _flatten_python_groups(lines)
    has_traceback = any(line.startswith(_PY_TRACEBACK) for line in lines)
    result: list[ExceptionInfo] = []
    frames: list[Frame] = []
    last_frame: Frame | None = None
    current: ExceptionInfo | None = None
    message_lines: list[str] = []
    expect_header = not has_traceback
    relation_next: str | None = None
    group_next = False

    def finish() -> None:
        nonlocal current, message_lines
        if current is not None:
            if message_lines:
                extra = "\n".join(message_lines).rstrip()
                if extra:
                    current.value = f"{current.value}\n{extra}" if current.value else extra
            result.append(current)
        current = None
        message_lines = []

    for line in lines:
        if line == _GROUP_MARK:
            finish()
            frames, last_frame = [], None
            group_next = True
            expect_header = True
            continue
        if line.startswith(_PY_TRACEBACK):
            finish()
            frames, last_frame = [], None
            expect_header = True
            continue
        if line.startswith((" ", "\t")):
            match = _PY_FILE.match(line) if current is None else None
            if match is not None:
                path = match.group("path")
                last_frame = Frame(
                    function=match.group("func"),
                    module=_python_module(path),
                    filename=path,
                    abs_path=path,
                    lineno=_to_int(match.group("line")),
                )
                frames.append(last_frame)
                continue
            if current is not None:
                message_lines.append(line)
                continue
            if last_frame is not None and last_frame.context_line is None:
                stripped = line.strip()
                if stripped and not set(stripped) <= _PY_MARKERS and not stripped.startswith("[Previous line repeated"):
                    last_frame.context_line = stripped
            continue
        if line in (_PY_CAUSE, _PY_CONTEXT):
            finish()
            relation_next = "cause" if line == _PY_CAUSE else "context"
            frames, last_frame = [], None
            expect_header = True
            continue
        if current is not None:
            message_lines.append(line)
            continue
        if not line.strip() or not (expect_header or frames):
            continue
        header = _PY_HEADER.match(line)
        if header is None:
            continue
        if relation_next is not None:
            # The previous block's reported exception (not one of its group members).
            for earlier in reversed(result):
                if earlier.relation is None:
                    earlier.relation = relation_next
                    break
        current = ExceptionInfo(type=header.group("type"), value=header.group("value"), frames=frames)
        if group_next:
            current.relation = "group"
            group_next = False
        relation_next = None
        frames, last_frame = [], None
        expect_header = False
    finish()
    if frames and not result:
        # A traceback cut off before its exception line still has useful frames.
        result.append(ExceptionInfo(frames=frames))
    members = [e for e in result if e.relation == "group"]
    if members:
        result = members + [e for e in result if e.relation != "group"]
    return result


# --------------------------------------------------------------------------- JavaScript

_JS_HEADER = re.compile(r"(?:Uncaught )?(?P<type>[A-Za-z_$][\w$.]*(?: \[[\w-]+\])?)(?:: (?P<value>.*)|:)?$")
_JS_EVAL_ORIGIN = re.compile(r"\(([^()]+?):(\d+):(\d+)\)")
_JS_CAUSE = re.compile(r"\s*\[cause\]: (.*)$")


def _js_frame(function: str | None, location: str) -> Frame:
    if location.startswith("eval at "):
        origin = _JS_EVAL_ORIGIN.search(location)
        function = function or "eval"
        if origin is None:
            return Frame(function=function, filename="<anonymous>", abs_path="<anonymous>")
        path, line, col = origin.group(1), _to_int(origin.group(2)), _to_int(origin.group(3))
    elif " > eval" in location or " > Function" in location:
        # Firefox: 'https://x/app.js line 12 > eval:1:5'
        path, _, rest = location.partition(" line ")
        digits = rest.split(" ", 1)[0]
        line, col = _to_int(digits), None
    else:
        path, line, col = _split_location(location)
    filename = _url_path(path)
    return Frame(
        function=function or None, module=js_module(filename), filename=filename, abs_path=path, lineno=line, colno=col
    )


def js_module(path: str) -> str | None:
    """The module of a JavaScript file inside ``node_modules`` (``lodash/map``), else None."""
    cut = path.rfind("node_modules/")
    if cut < 0:
        return None
    rel = path[cut + 13 :]
    dot = rel.rfind(".")
    return rel[:dot] if dot > rel.rfind("/") else rel


def _v8_frame(rest: str) -> Frame:
    if rest.startswith("async "):
        rest = rest[6:]
    if rest.endswith(")"):
        cut = rest.find(" (")
        if cut > 0:
            function = rest[:cut]
            alias = function.find(" [as ")
            if alias > 0:
                function = function[:alias]
            return _js_frame(function, rest[cut + 2 : -1])
    return _js_frame(None, rest)


def _gecko_frame(line: str) -> Frame | None:
    """A Firefox / Safari ``function@location:line:col`` frame, or None for any other line."""
    function, _, location = line.partition("@")
    if not location or ": " in function:
        return None
    if location == "[native code]" or " > eval" in location or _split_location(location)[1] is not None:
        return _js_frame(function or None, location)
    return None


def _parse_javascript(lines: list[str]) -> list[ExceptionInfo]:
    chain: list[ExceptionInfo] = []
    current: ExceptionInfo | None = None
    in_frames = False
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        frame: Frame | None = None
        if stripped.startswith("at "):
            # util.inspect() opens the error's own properties after the last frame: ' {'.
            frame = _v8_frame(stripped[3:-2] if stripped.endswith(" {") else stripped[3:])
        elif "@" in stripped:
            frame = _gecko_frame(stripped)
        if frame is not None:
            if current is None:
                current = ExceptionInfo()
                chain.append(current)
            current.frames.append(frame)
            in_frames = True
            continue
        cause = _JS_CAUSE.match(line) if current is not None else None
        if cause is not None or current is None:
            # util.inspect() prints an error's cause as '[cause]: TypeError: ...'.
            current = ExceptionInfo()
            chain.append(current)
            _js_header(current, cause.group(1).strip() if cause is not None else stripped)
            in_frames = False
        elif not in_frames:
            current.value = f"{current.value}\n{stripped}" if current.value is not None else stripped
    # V8 and Gecko print the newest frame first, and a cause after the error it caused.
    for exc in chain:
        exc.frames.reverse()
    chain.reverse()
    for exc in chain[:-1]:
        exc.relation = "cause"
    return chain


def _js_header(exc: ExceptionInfo, text: str) -> None:
    match = _JS_HEADER.match(text)
    if match is not None and (match.group("value") is not None or text.endswith(("Error", "Exception"))):
        exc.type = match.group("type")
        exc.value = match.group("value")
    else:
        exc.value = text


# --------------------------------------------------------------------------- Java / Kotlin

_JAVA_AT = re.compile(r"(?P<indent>\s*)at (?P<name>[^\s(]+)\((?P<loc>[^)]*)\)")
_JAVA_HEADER = re.compile(
    r"(?P<indent>\s*)(?:Exception in thread \"[^\"]*\" |(?P<rel>Caused by|Suppressed|Wrapped by): )?"
    r"(?P<type>[A-Za-z_$][\w$]*(?:\.[\w$]+)*)(?:: (?P<value>.*)|:)?$"
)


def _java_frame(name: str, loc: str) -> Frame:
    lambda_at = name.find("$$Lambda")
    prefix_end = name.rfind("/", 0, lambda_at if lambda_at >= 0 else len(name))
    if prefix_end >= 0:
        # Module or class-loader prefix: 'java.base/', 'app//'.
        name = name[prefix_end + 1 :]
    cls, _, method = name.rpartition(".")
    filename: str | None = None
    line: int | None = None
    if loc and loc not in ("Native Method", "Unknown Source", "Compiled Code"):
        filename, _, digits = loc.partition(":")
        line = _to_int(digits)
    elif loc.startswith("Unknown Source:"):
        line = _to_int(loc[15:])
    return Frame(function=method or None, module=cls or None, filename=filename, lineno=line)


def _parse_java(lines: list[str]) -> list[ExceptionInfo]:
    chain: list[ExceptionInfo] = []
    current: ExceptionInfo | None = None
    in_frames = False
    suppressed_indent: int | None = None
    for line in lines:
        if not line.strip():
            continue
        at = _JAVA_AT.match(line)
        if at is not None:
            if current is None:
                current = ExceptionInfo()
                chain.append(current)
            current.frames.append(_java_frame(at.group("name"), at.group("loc")))
            in_frames = True
            continue
        stripped = line.strip()
        if stripped.startswith("...") and (stripped.endswith(" more") or stripped.endswith("omitted")):
            if current is not None:
                digits = stripped[3:].strip().split(" ", 1)[0]
                current.frames_omitted += _to_int(digits) or 0
            continue
        header = _JAVA_HEADER.match(line)
        relation = header.group("rel") if header is not None else None
        if header is not None and (relation is not None or current is None):
            indent = len(header.group("indent"))
            rel: str | None
            if relation == "Suppressed":
                suppressed_indent = indent
                rel = "suppressed"
            elif suppressed_indent is not None and indent > suppressed_indent:
                rel = "suppressed"
            else:
                suppressed_indent = None
                rel = "cause" if relation else None
            current = ExceptionInfo(type=header.group("type"), value=header.group("value"), relation=rel)
            chain.append(current)
            in_frames = False
            continue
        if current is not None and not in_frames and not stripped.startswith("[CIRCULAR REFERENCE"):
            # Multi-line message (a database error's Detail: and Hint: lines, for example).
            current.value = f"{current.value}\n{line.rstrip()}" if current.value else line.strip()
    return _order_outer_first(chain)


def _order_outer_first(chain: list[ExceptionInfo]) -> list[ExceptionInfo]:
    """Printed outer-first chains -> innermost first; frames newest-first -> oldest first."""
    for exc in chain:
        exc.frames.reverse()
    main = [e for e in chain if e.relation != "suppressed"]
    side = [e for e in chain if e.relation == "suppressed"]
    main.reverse()
    for exc in main[:-1]:
        if exc.relation is None:
            exc.relation = "cause"
    if main:
        main[-1].relation = None
    return side + main


# --------------------------------------------------------------------------- Go

_GO_FILE = re.compile(r"\t(?P<path>.+?):(?P<line>\d+)(?: \+0x[0-9a-fA-F]+)?\s*$")
_GO_GOROUTINE = re.compile(r"goroutine \d+ \[")
_GO_CREATED_IN = re.compile(r" in goroutine \d+$")


def _go_split(name: str) -> tuple[str | None, str]:
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot < 0:
        return None, name
    return name[:dot], name[dot + 1 :]


def _parse_go(lines: list[str]) -> list[ExceptionInfo]:
    panics: list[ExceptionInfo] = []
    frames: list[Frame] = []
    pending: str | None = None
    goroutines = 0
    for line in lines:
        if _GO_GOROUTINE.match(line):
            goroutines += 1
            if goroutines > 1:
                break
            continue
        stripped = line.strip()
        if stripped.startswith("panic: ") or line.startswith("fatal error: "):
            kind, _, value = stripped.partition(": ")
            for suffix in (" [recovered]", " [recovered, repanicked]"):
                if value.endswith(suffix):
                    value = value[: -len(suffix)]
            panics.append(ExceptionInfo(type=kind, value=value))
            continue
        if line.startswith("\t"):
            match = _GO_FILE.match(line)
            if match is not None and pending is not None:
                module, function = _go_split(pending)
                path = match.group("path")
                frames.append(
                    Frame(
                        function=function,
                        module=module,
                        filename=path,
                        abs_path=path,
                        lineno=_to_int(match.group("line")),
                    )
                )
                pending = None
            continue
        if stripped.startswith("created by "):
            pending = _GO_CREATED_IN.sub("", stripped[11:])
        elif stripped.endswith(")") and "(" in stripped and not stripped.startswith("["):
            pending = stripped[: stripped.rfind("(")]
        else:
            pending = None
    frames.reverse()
    if not panics:
        return [ExceptionInfo(frames=frames)] if frames else []
    for exc in panics[:-1]:
        exc.relation = "context"
    panics[-1].frames = frames
    return panics


# --------------------------------------------------------------------------- .NET

_NET_HEADER = re.compile(
    r"\s*(?:Unhandled [Ee]xception\. |---> |\(Inner Exception #\d+\) )*"
    r"(?P<type>[A-Za-z_][\w.`+]*)(?: \(0x[0-9A-Fa-f]{1,8}\))?(?:: (?P<value>.*)|:)?$"
)
# Async state machines: 'Ns.Type.<GetAsync>d__5.MoveNext' (a method) and
# 'Ns.Type.<>c__DisplayClass5_0.<<RegisterAsync>b__0>d.MoveNext' (an async lambda).
_NET_ASYNC_STATE = re.compile(r"(?P<cls>.*)\.<(?P<method>.+)>d(?:__\d+)?$")


def _dotnet_frame(body: str) -> Frame:
    path: str | None = None
    line: int | None = None
    cut = body.rfind(" in ")
    if cut > 0:
        loc = body[cut + 4 :]
        loc_path, sep, digits = loc.rpartition(":line ")
        if sep:
            path, line = loc_path, _to_int(digits.strip())
            body = body[:cut]
    paren = body.find("(")
    name = body[:paren] if paren > 0 else body
    bracket = name.find("[")
    if bracket > 0 and name.endswith("]"):
        name = name[:bracket]
    if name.endswith(("..ctor", "..cctor")):
        cut_at = name.rfind("..")
        module, function = name[:cut_at], name[cut_at + 1 :]
    else:
        module, _, function = name.rpartition(".")
    if function == "MoveNext":
        state = _NET_ASYNC_STATE.match(module)
        if state is not None:
            module, function = state.group("cls"), state.group("method")
    return Frame(
        function=function or None,
        module=module or None,
        filename=_basename(path) if path else None,
        abs_path=path,
        lineno=line,
    )


def _parse_dotnet(lines: list[str]) -> list[ExceptionInfo]:
    printed: list[ExceptionInfo] = []
    stack: list[ExceptionInfo] = []
    in_frames = False
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        # AggregateException appends '<---' right after each listed inner exception.
        closes_inner = stripped.endswith("<---")
        if closes_inner:
            stripped = stripped[:-4].rstrip()
        if stripped.startswith("at "):
            if not stack:
                root = ExceptionInfo()
                printed.append(root)
                stack.append(root)
            stack[-1].frames.append(_dotnet_frame(stripped[3:]))
            in_frames = True
            if closes_inner:
                del stack[1:]
            continue
        if stripped.startswith("--- End of inner exception stack trace"):
            if len(stack) > 1:
                stack.pop()
            continue
        if stripped.startswith("--- End of stack trace") or not stripped:
            if closes_inner:
                del stack[1:]
            continue
        is_inner = stripped.startswith("---> ")
        if is_inner or not stack:
            header = _NET_HEADER.match(stripped)
            if header is None:
                continue
            exc = ExceptionInfo(type=header.group("type"), value=header.group("value"))
            if "(Inner Exception #" in stripped:
                del stack[1:]
                exc.relation = "group"
            elif stack:
                exc.relation = "inner"
            printed.append(exc)
            stack.append(exc)
            in_frames = False
            continue
        if not in_frames:
            top = stack[-1]
            top.value = f"{top.value}\n{stripped}" if top.value else stripped
    for exc in printed:
        exc.frames.reverse()
    printed.reverse()
    if printed:
        printed[-1].relation = None
    return printed


# --------------------------------------------------------------------------- Ruby

_RUBY_BLOCK_LEVELS = re.compile(r"^block \(\d+ levels\) in ")


def _parse_ruby(lines: list[str]) -> list[ExceptionInfo]:
    chain: list[ExceptionInfo] = []
    current: ExceptionInfo | None = None
    in_frames = False
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        is_from = stripped.startswith("from ")
        body = stripped[5:] if is_from else stripped
        match = _RUBY_IN.search(body)
        if match is None:
            if current is not None and not in_frames:
                current.value = f"{current.value}\n{stripped}" if current.value else stripped
            continue
        path = body[: match.start()]
        rest = body[match.end() :]
        quote_end = rest.find("'")
        function = rest[:quote_end] if quote_end >= 0 else rest
        tail = rest[quote_end + 1 :] if quote_end >= 0 else ""
        frame = Frame(function=function or None, filename=path, abs_path=path, lineno=_to_int(match.group(1)))
        if not is_from and tail.startswith(": "):
            message = tail[2:]
            exc_type: str | None = None
            if message.endswith(")"):
                cut = message.rfind(" (")
                candidate = message[cut + 2 : -1] if cut >= 0 else ""
                if candidate[:1].isupper() and all(c.isalnum() or c in "_:" for c in candidate):
                    exc_type, message = candidate, message[:cut]
            current = ExceptionInfo(type=exc_type, value=message)
            chain.append(current)
            in_frames = False
        elif current is None:
            current = ExceptionInfo()
            chain.append(current)
        current.frames.append(frame)
        in_frames = in_frames or is_from
    return _order_outer_first(chain)


_PARSERS = {
    "python": _parse_python,
    "javascript": _parse_javascript,
    "java": _parse_java,
    "go": _parse_go,
    "dotnet": _parse_dotnet,
    "ruby": _parse_ruby,
}


# --------------------------------------------------------------------------- entry point


def normalize_language(hint: str | None) -> str | None:
    """Map a ``telemetry.sdk.language`` value (or a similar name) to a parser name, if known."""
    if not hint:
        return None
    return _HINTS.get(hint.strip().lower())


def _prepare(text: str, notes: list[str]) -> tuple[list[str], bool]:
    truncated = False
    if len(text) > MAX_TEXT_CHARS:
        head_end = text.rfind("\n", 0, MAX_TEXT_CHARS * 3 // 4)
        tail_start = text.find("\n", len(text) - MAX_TEXT_CHARS // 4)
        head_end = head_end if head_end > 0 else MAX_TEXT_CHARS * 3 // 4
        tail_start = tail_start if tail_start > 0 else len(text) - MAX_TEXT_CHARS // 4
        notes.append(f"stack trace of {len(text)} characters truncated to its first and last parts")
        text = text[:head_end] + "\n" + text[tail_start:]
        truncated = True
    lines = text.splitlines()
    if len(text) > MAX_LINE_CHARS and any(len(line) > MAX_LINE_CHARS for line in lines):
        lines = [line[:MAX_LINE_CHARS] for line in lines]
        notes.append(f"lines longer than {MAX_LINE_CHARS} characters cut")
    return lines, truncated


def parse_stacktrace(
    text: str | None,
    *,
    language: str | None = None,
    exc_type: str | None = None,
    exc_message: str | None = None,
    in_app: InAppRules = DEFAULT_IN_APP,
) -> ParsedStacktrace:
    """Parse ``text`` (an ``exception.stacktrace`` value) into chained exceptions and frames.

    ``language`` is a hint (``telemetry.sdk.language`` or a parser name); when the hinted
    parser finds no frames, the language detected from the text is tried. ``exc_type`` and
    ``exc_message`` (the ``exception.type`` / ``exception.message`` attributes) fill in the
    reported exception where the text does not name it, or stand alone when there is no text.
    """
    notes: list[str] = []
    parsed = ParsedStacktrace(notes=notes)
    hinted = normalize_language(language)
    if text:
        lines, parsed.truncated = _prepare(text, notes)
        exceptions: list[ExceptionInfo] = []
        if hinted is not None:
            exceptions = _PARSERS[hinted](lines)
            parsed.language = hinted
        if not any(e.frames for e in exceptions):
            # No hint, or the hinted parser found no frame: trust the text.
            detected = detect_language(text)
            if detected is not None and detected != hinted:
                exceptions = _PARSERS[detected](lines)
                parsed.language = detected
        parsed.exceptions = exceptions
    if parsed.language is None:
        parsed.language = hinted
    if len(parsed.exceptions) > MAX_EXCEPTIONS:
        notes.append(f"{len(parsed.exceptions) - MAX_EXCEPTIONS} chained exceptions dropped")
        parsed.exceptions = parsed.exceptions[-MAX_EXCEPTIONS:]
    for exc in parsed.exceptions:
        _cap_frames(exc)
    _merge_attributes(parsed, exc_type, exc_message)
    in_app.apply(parsed)
    return parsed


def _merge_attributes(parsed: ParsedStacktrace, exc_type: str | None, exc_message: str | None) -> None:
    if not exc_type and not exc_message:
        return
    primary = parsed.primary
    if primary is None:
        parsed.exceptions.append(ExceptionInfo(type=exc_type or None, value=exc_message))
        return
    if not primary.type and exc_type:
        primary.type = exc_type
    if primary.value is None and exc_message is not None:
        primary.value = exc_message


def exceptions_from_dicts(values: Iterable[Mapping[str, Any]], *, language: str | None = None) -> ParsedStacktrace:
    """Build a :class:`ParsedStacktrace` from Sentry-style ``exception.values`` (reported last).

    Frames keep the ``in_app`` their SDK sent; frames without one get the built-in rules'.
    """
    name = normalize_language(language) or language
    exceptions = [ExceptionInfo.from_dict(v, name) for v in values if isinstance(v, Mapping)]
    return ParsedStacktrace(language=name, exceptions=exceptions[-MAX_EXCEPTIONS:])
