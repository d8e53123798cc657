"""Stack trace parsing, one language at a time, checking frames exactly."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from exporters.errors.stacktrace import (
    ExceptionInfo,
    Frame,
    InAppRules,
    ParsedStacktrace,
    detect_language,
    exceptions_from_dicts,
    parse_stacktrace,
)

Row = tuple[str | None, str | None, str | None, int | None, int | None, bool]


def rows(exc: ExceptionInfo) -> list[Row]:
    """(module, filename, function, lineno, colno, in_app) per frame, oldest first."""
    return [(f.module, f.filename, f.function, f.lineno, f.colno, f.in_app) for f in exc.frames]


def chain(parsed: ParsedStacktrace) -> list[tuple[str | None, str | None, str | None]]:
    return [(e.type, e.value, e.relation) for e in parsed.exceptions]


# --------------------------------------------------------------------------- Python

PYTHON_CHAINED = textwrap.dedent(
    """\
    Traceback (most recent call last):
      File "/srv/app/.venv/lib/python3.11/site-packages/psycopg/cursor.py", line 732, in execute
        raise ex.with_traceback(None)
    psycopg.errors.UniqueViolation: duplicate key value violates unique constraint "users_email_key"
    DETAIL:  Key (email)=(a@b.c) already exists.

    The above exception was the direct cause of the following exception:

    Traceback (most recent call last):
      File "/srv/app/accounts/api.py", line 29, in signup
        user = service.register(payload.email)
               ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
      File "/usr/lib/python3.11/json/__init__.py", line 346, in loads
        return _default_decoder.decode(s)
      File "<frozen importlib._bootstrap>", line 1178, in _find_and_load
      File "<string>", line 3, in __init__
      File "/srv/app/accounts/service.py", line 67, in register
        raise EmailTaken(email) from err
    accounts.errors.EmailTaken: a@b.c is already registered

    During handling of the above exception, another exception occurred:

    Traceback (most recent call last):
      File "/srv/app/accounts/api.py", line 33, in signup
        log.exception("signup failed", extra={"email": payload.email})
    NameError: name 'log' is not defined
    """
)


def test_python_chain_frames_and_relations() -> None:
    parsed = parse_stacktrace(PYTHON_CHAINED)
    assert parsed.language == "python"
    assert chain(parsed) == [
        (
            "psycopg.errors.UniqueViolation",
            'duplicate key value violates unique constraint "users_email_key"\nDETAIL:  Key (email)=(a@b.c) already exists.',
            "cause",
        ),
        ("accounts.errors.EmailTaken", "a@b.c is already registered", "context"),
        ("NameError", "name 'log' is not defined", None),
    ]
    first, second, third = parsed.exceptions
    assert rows(first) == [
        ("psycopg.cursor", "/srv/app/.venv/lib/python3.11/site-packages/psycopg/cursor.py", "execute", 732, None, False)
    ]
    assert first.frames[0].context_line == "raise ex.with_traceback(None)"
    assert rows(second) == [
        (None, "/srv/app/accounts/api.py", "signup", 29, None, True),
        ("json", "/usr/lib/python3.11/json/__init__.py", "loads", 346, None, False),
        ("importlib._bootstrap", "<frozen importlib._bootstrap>", "_find_and_load", 1178, None, False),
        (None, "<string>", "__init__", 3, None, False),
        (None, "/srv/app/accounts/service.py", "register", 67, None, True),
    ]
    # The caret line of Python 3.11+ is not mistaken for source.
    assert second.frames[0].context_line == "user = service.register(payload.email)"
    assert second.frames[2].context_line is None
    assert rows(third) == [(None, "/srv/app/accounts/api.py", "signup", 33, None, True)]
    assert parsed.primary is third


def test_python_syntax_error_and_bare_exception_line() -> None:
    text = textwrap.dedent(
        """\
        Traceback (most recent call last):
          File "/app/main.py", line 3, in <module>
            import broken
          File "/app/broken.py", line 2
            def f(:
                  ^
        SyntaxError: invalid syntax
        """
    )
    parsed = parse_stacktrace(text)
    assert chain(parsed) == [("SyntaxError", "invalid syntax", None)]
    assert rows(parsed.exceptions[0]) == [
        (None, "/app/main.py", "<module>", 3, None, True),
        (None, "/app/broken.py", None, 2, None, True),
    ]
    # An exception that was never raised has no traceback: only the hint says it is Python.
    bare = parse_stacktrace("ValueError: bad value 3", language="python")
    assert chain(bare) == [("ValueError", "bad value 3", None)]
    assert not bare.has_frames


def test_python_exception_group() -> None:
    text = textwrap.dedent(
        """\
          + Exception Group Traceback (most recent call last):
          |   File "/srv/imp/run.py", line 41, in import_feed
          |     async with asyncio.TaskGroup() as tg:
          | ExceptionGroup: unhandled errors in a TaskGroup (2 sub-exceptions)
          +-+---------------- 1 ----------------
            | Traceback (most recent call last):
            |   File "/srv/imp/rows.py", line 23, in import_row
            |     price = Decimal(row["price"])
            | decimal.InvalidOperation: [<class 'decimal.ConversionSyntax'>]
            +---------------- 2 ----------------
            | KeyError: 'sku'
            +------------------------------------
        """
    )
    parsed = parse_stacktrace(text)
    assert parsed.language == "python"
    assert chain(parsed) == [
        ("decimal.InvalidOperation", "[<class 'decimal.ConversionSyntax'>]", "group"),
        ("KeyError", "'sku'", "group"),
        ("ExceptionGroup", "unhandled errors in a TaskGroup (2 sub-exceptions)", None),
    ]
    assert rows(parsed.exceptions[0]) == [(None, "/srv/imp/rows.py", "import_row", 23, None, True)]
    assert rows(parsed.exceptions[2]) == [(None, "/srv/imp/run.py", "import_feed", 41, None, True)]


def test_python_text_from_the_real_opentelemetry_sdk() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    def parse_amount(text: str) -> int:
        return int(text)

    with tracer.start_as_current_span("checkout") as span:
        try:
            parse_amount("twelve")
        except ValueError as err:
            span.record_exception(err)
    provider.shutdown()
    (event,) = exporter.get_finished_spans()[0].events
    attrs = event.attributes or {}
    parsed = parse_stacktrace(
        str(attrs["exception.stacktrace"]),
        language="python",
        exc_type=str(attrs["exception.type"]),
        exc_message=str(attrs["exception.message"]),
    )
    assert chain(parsed) == [("ValueError", "invalid literal for int() with base 10: 'twelve'", None)]
    functions = [(f.function, f.filename, f.in_app) for f in parsed.exceptions[0].frames]
    assert functions == [
        ("test_python_text_from_the_real_opentelemetry_sdk", __file__, True),
        ("parse_amount", __file__, True),
    ]
    assert parsed.exceptions[0].frames[1].context_line == "return int(text)"


# --------------------------------------------------------------------------- JavaScript

NODE_STACK = """\
TypeError: Cannot read properties of undefined (reading 'email')
    at formatRecipient (/app/src/services/user.js:42:23)
    at Array.map (<anonymous>)
    at async Promise.all (index 0)
    at async sendReceipt (/app/src/handlers/orders.js:88:17)
    at Layer.handle [as handle_request] (/app/node_modules/express/lib/router/layer.js:95:5)
    at /app/node_modules/express/lib/router/index.js:284:15
    at new Promise (<anonymous>)
    at x (eval at compile (/app/src/tpl.js:10:3), <anonymous>:1:21)
    at Object.<anonymous> (file:///app/src/main.mjs:4:7)
    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)
"""


def test_node_frames() -> None:
    parsed = parse_stacktrace(NODE_STACK)
    assert parsed.language == "javascript"
    assert chain(parsed) == [("TypeError", "Cannot read properties of undefined (reading 'email')", None)]
    assert rows(parsed.exceptions[0]) == [
        (None, "node:internal/process/task_queues", "process.processTicksAndRejections", 95, 5, False),
        (None, "/app/src/main.mjs", "Object.<anonymous>", 4, 7, True),
        (None, "/app/src/tpl.js", "x", 10, 3, True),
        (None, "<anonymous>", "new Promise", None, None, False),
        ("express/lib/router/index", "/app/node_modules/express/lib/router/index.js", None, 284, 15, False),
        ("express/lib/router/layer", "/app/node_modules/express/lib/router/layer.js", "Layer.handle", 95, 5, False),
        (None, "/app/src/handlers/orders.js", "sendReceipt", 88, 17, True),
        (None, "index 0", "Promise.all", None, None, False),
        (None, "<anonymous>", "Array.map", None, None, False),
        (None, "/app/src/services/user.js", "formatRecipient", 42, 23, True),
    ]
    assert parsed.exceptions[0].frames[1].abs_path == "file:///app/src/main.mjs"


def test_node_cause_from_util_inspect() -> None:
    text = """\
Error: outer
    at /tmp/a.js:8:15 {
  [cause]: TypeError: inner
      at inner (/tmp/a.js:8:42)
}"""
    parsed = parse_stacktrace(text, language="nodejs")
    assert chain(parsed) == [("TypeError", "inner", "cause"), ("Error", "outer", None)]
    assert rows(parsed.exceptions[0]) == [(None, "/tmp/a.js", "inner", 8, 42, True)]
    assert rows(parsed.exceptions[1]) == [(None, "/tmp/a.js", None, 8, 15, True)]


def test_firefox_and_safari_frames() -> None:
    firefox = """\
renderLine@https://shop.example.com/static/js/main.3f2a1b9c.js?v=2:1:48211
renderCart/<@https://shop.example.com/static/js/main.3f2a1b9c.js:1:48902
@https://shop.example.com/app.js:10:5
evalFn@https://shop.example.com/app.js line 2 > eval:1:5
"""
    parsed = parse_stacktrace(firefox, exc_type="TypeError", exc_message="line is undefined")
    assert parsed.language == "javascript"
    assert chain(parsed) == [("TypeError", "line is undefined", None)]
    assert rows(parsed.exceptions[0]) == [
        (None, "/app.js", "evalFn", 2, None, True),
        (None, "/app.js", None, 10, 5, True),
        (None, "/static/js/main.3f2a1b9c.js", "renderCart/<", 1, 48902, True),
        (None, "/static/js/main.3f2a1b9c.js", "renderLine", 1, 48211, True),
    ]
    safari = "submit@https://x.test/assets/index-B7xK2m9Q.js:2:18810\nforEach@[native code]\nglobal code@https://x.test/a.js:1:1"
    parsed = parse_stacktrace(safari)
    assert rows(parsed.exceptions[0]) == [
        (None, "/a.js", "global code", 1, 1, True),
        (None, "[native code]", "forEach", None, None, False),
        (None, "/assets/index-B7xK2m9Q.js", "submit", 2, 18810, True),
    ]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_stack_from_a_real_node_process(tmp_path: Path) -> None:
    script = tmp_path / "app.js"
    script.write_text(
        "function load(o) { return o.user.email; }\n"
        "async function main() { await null; load({}); }\n"
        "main().catch((e) => { process.stdout.write(e.stack); });\n"
    )
    stack = subprocess.run(["node", str(script)], capture_output=True, text=True, check=True, timeout=60).stdout
    parsed = parse_stacktrace(stack)
    assert chain(parsed) == [("TypeError", "Cannot read properties of undefined (reading 'email')", None)]
    assert [(f.filename, f.function, f.lineno, f.in_app) for f in parsed.exceptions[0].frames] == [
        (str(script), "main", 2, True),
        (str(script), "load", 1, True),
    ]


# --------------------------------------------------------------------------- Java / Kotlin

JAVA_STACK = """\
Exception in thread "main" jakarta.servlet.ServletException: Request processing failed
	at org.springframework.web.servlet.FrameworkServlet.processRequest(FrameworkServlet.java:1022)
	at com.acme.shop.api.Filter.doFilter(Filter.java:31) ~[classes/:na]
	at java.base/java.lang.Thread.run(Thread.java:1583)
	Suppressed: java.io.IOException: close failed
		at com.acme.shop.io.Stream.close(Stream.java:9)
		... 3 more
Caused by: org.postgresql.util.PSQLException: ERROR: duplicate key value
  Detail: Key (email)=(a@b.c) already exists.
	at org.postgresql.core.v3.QueryExecutorImpl.receiveErrorResponse(QueryExecutorImpl.java:2725)
	at com.acme.shop.orders.OrderService$$SpringCGLIB$$0.save(<generated>)
	at com.acme.shop.orders.OrderService.lambda$save$0(OrderService.kt:44)
	at app//com.acme.shop.orders.OrderService$$Lambda/0x00007f3c8c00a000.apply(Unknown Source)
	at jdk.internal.reflect.NativeMethodAccessorImpl.invoke0(Native Method)
	... 48 more
"""


def test_java_chain_suppressed_and_frames() -> None:
    parsed = parse_stacktrace(JAVA_STACK)
    assert parsed.language == "java"
    assert chain(parsed) == [
        ("java.io.IOException", "close failed", "suppressed"),
        (
            "org.postgresql.util.PSQLException",
            "ERROR: duplicate key value\n  Detail: Key (email)=(a@b.c) already exists.",
            "cause",
        ),
        ("jakarta.servlet.ServletException", "Request processing failed", None),
    ]
    suppressed, cause, outer = parsed.exceptions
    assert rows(suppressed) == [("com.acme.shop.io.Stream", "Stream.java", "close", 9, None, True)]
    assert suppressed.frames_omitted == 3
    assert rows(cause) == [
        ("jdk.internal.reflect.NativeMethodAccessorImpl", None, "invoke0", None, None, False),
        ("com.acme.shop.orders.OrderService$$Lambda/0x00007f3c8c00a000", None, "apply", None, None, True),
        ("com.acme.shop.orders.OrderService", "OrderService.kt", "lambda$save$0", 44, None, True),
        ("com.acme.shop.orders.OrderService$$SpringCGLIB$$0", "<generated>", "save", None, None, True),
        (
            "org.postgresql.core.v3.QueryExecutorImpl",
            "QueryExecutorImpl.java",
            "receiveErrorResponse",
            2725,
            None,
            False,
        ),
    ]
    assert cause.frames_omitted == 48
    assert rows(outer) == [
        ("java.lang.Thread", "Thread.java", "run", 1583, None, False),
        ("com.acme.shop.api.Filter", "Filter.java", "doFilter", 31, None, True),
        (
            "org.springframework.web.servlet.FrameworkServlet",
            "FrameworkServlet.java",
            "processRequest",
            1022,
            None,
            False,
        ),
    ]


@pytest.mark.skipif(shutil.which("javac") is None or shutil.which("java") is None, reason="no JDK")
def test_stack_from_a_real_jvm(tmp_path: Path) -> None:
    (tmp_path / "Main.java").write_text(
        "public class Main {\n"
        "  static int parse(String s) { return Integer.parseInt(s); }\n"
        "  public static void main(String[] a) {\n"
        '    try { parse("x1"); } catch (Exception e) { new IllegalStateException("bad input", e).printStackTrace(); }\n'
        "  }\n"
        "}\n"
    )
    subprocess.run(["javac", "Main.java"], cwd=tmp_path, check=True, timeout=120)
    stack = subprocess.run(
        ["java", "-cp", str(tmp_path), "Main"], capture_output=True, text=True, check=True, timeout=120
    ).stderr
    parsed = parse_stacktrace(stack)
    assert chain(parsed) == [
        ("java.lang.NumberFormatException", 'For input string: "x1"', "cause"),
        ("java.lang.IllegalStateException", "bad input", None),
    ]
    cause, outer = parsed.exceptions
    # The cause's frames shared with the enclosing trace are printed as '... 1 more'.
    assert [(f.module, f.function, f.lineno) for f in cause.frames if f.in_app] == [("Main", "parse", 2)]
    assert cause.frames_omitted == 1
    assert all(f.module and f.module.startswith("java.lang.") for f in cause.frames if not f.in_app)
    assert [(f.module, f.function, f.lineno, f.in_app) for f in outer.frames] == [("Main", "main", 4, True)]


# --------------------------------------------------------------------------- Go

GO_PANIC = """\
panic: runtime error: invalid memory address or nil pointer dereference [recovered]
	panic: runtime error: invalid memory address or nil pointer dereference
[signal SIGSEGV: segmentation violation code=0x1 addr=0x18 pc=0x6f1c2a]

goroutine 54 [running]:
panic({0x9e2f40?, 0xf1a3b0?})
	/usr/local/go/src/runtime/panic.go:770 +0x132
github.com/acme/shop/internal/cart.(*Service).Total(0x0, {0xa3e8f0, 0xc0003c4150})
	/src/internal/cart/service.go:88 +0x2a
github.com/acme/shop/internal/cart.(*Handler).Summary.func1(...)
	/src/internal/cart/handler.go:41
github.com/go-chi/chi/v5.(*Mux).routeHTTP(0xc0000f4060, {0xa3d2c0, 0xc0001c62a0}, 0xc0002b6000)
	/go/pkg/mod/github.com/go-chi/chi/v5@v5.0.12/mux.go:459 +0x2c7
main.main.gowrap1()
	/src/cmd/api/main.go:30 +0x25
created by net/http.(*Server).Serve in goroutine 1
	/usr/local/go/src/net/http/server.go:3290 +0x4b4

goroutine 1 [IO wait]:
internal/poll.runtime_pollWait(0x7f0e4c6a1e28, 0x72)
	/usr/local/go/src/runtime/netpoll.go:345 +0x85
"""


def test_go_panic_frames() -> None:
    parsed = parse_stacktrace(GO_PANIC)
    assert parsed.language == "go"
    assert chain(parsed) == [
        ("panic", "runtime error: invalid memory address or nil pointer dereference", "context"),
        ("panic", "runtime error: invalid memory address or nil pointer dereference", None),
    ]
    assert rows(parsed.exceptions[1]) == [
        ("net/http", "/usr/local/go/src/net/http/server.go", "(*Server).Serve", 3290, None, False),
        ("main", "/src/cmd/api/main.go", "main.gowrap1", 30, None, True),
        (
            "github.com/go-chi/chi/v5",
            "/go/pkg/mod/github.com/go-chi/chi/v5@v5.0.12/mux.go",
            "(*Mux).routeHTTP",
            459,
            None,
            False,
        ),
        (
            "github.com/acme/shop/internal/cart",
            "/src/internal/cart/handler.go",
            "(*Handler).Summary.func1",
            41,
            None,
            True,
        ),
        ("github.com/acme/shop/internal/cart", "/src/internal/cart/service.go", "(*Service).Total", 88, None, True),
        (None, "/usr/local/go/src/runtime/panic.go", "panic", 770, None, False),
    ]


def test_go_debug_stack_takes_type_and_message_from_attributes() -> None:
    text = """\
goroutine 7 [running]:
runtime/debug.Stack()
	/usr/local/go/src/runtime/debug/stack.go:24 +0x5e
go.opentelemetry.io/otel/sdk/trace.(*recordingSpan).RecordError(0xc0001f8000, {0xa2e3a0, 0xc000212340}, {0xc00024bc48, 0x1, 0x1})
	/go/pkg/mod/go.opentelemetry.io/otel/sdk@v1.28.0/trace/span.go:462 +0x1c5
github.com/acme/orders/internal/httpapi.(*Server).getOrder(0xc0000b2000, {0xa3d2c0, 0xc0001c62a0}, 0xc0002b6000)
	github.com/acme/orders/internal/httpapi/orders.go:58 +0x2b9
"""
    parsed = parse_stacktrace(text, language="go", exc_type="*fmt.wrapError", exc_message="get order 7: sql: no rows")
    assert chain(parsed) == [("*fmt.wrapError", "get order 7: sql: no rows", None)]
    assert rows(parsed.exceptions[0]) == [
        (
            "github.com/acme/orders/internal/httpapi",
            "github.com/acme/orders/internal/httpapi/orders.go",
            "(*Server).getOrder",
            58,
            None,
            True,
        ),
        (
            "go.opentelemetry.io/otel/sdk/trace",
            "/go/pkg/mod/go.opentelemetry.io/otel/sdk@v1.28.0/trace/span.go",
            "(*recordingSpan).RecordError",
            462,
            None,
            False,
        ),
        ("runtime/debug", "/usr/local/go/src/runtime/debug/stack.go", "Stack", 24, None, False),
    ]


# --------------------------------------------------------------------------- .NET

DOTNET_STACK = """\
System.AggregateException: One or more errors occurred. (Boom) (Bang)
 ---> System.InvalidOperationException: Boom
   at Acme.Shop.Services.OrderService.<GetAsync>d__5.MoveNext() in /src/Acme.Shop/Services/OrderService.cs:line 57
--- End of stack trace from previous location ---
   at System.Linq.Enumerable.First[TSource](IEnumerable`1 source)
   at Acme.Shop.Program.<>c__DisplayClass0_0.<Main>b__0(Int32 x) in C:\\build\\Acme.Shop\\Program.cs:line 12
   --- End of inner exception stack trace ---
   at System.Threading.Tasks.Task.Wait()
   at Acme.Shop.Program.Main(String[] args) in C:\\build\\Acme.Shop\\Program.cs:line 10
 ---> (Inner Exception #1) Npgsql.PostgresException (0x80004005): 23505: duplicate key
   at Npgsql.Internal.NpgsqlConnector.ReadMessageLong(Boolean async)
   at Acme.Shop.Users.UserService..ctor(IDb db) in /src/Acme.Shop/Users/UserService.cs:line 8<---
"""


def test_dotnet_inner_and_aggregate_exceptions() -> None:
    parsed = parse_stacktrace(DOTNET_STACK)
    assert parsed.language == "dotnet"
    assert chain(parsed) == [
        ("Npgsql.PostgresException", "23505: duplicate key", "group"),
        ("System.InvalidOperationException", "Boom", "inner"),
        ("System.AggregateException", "One or more errors occurred. (Boom) (Bang)", None),
    ]
    group, inner, outer = parsed.exceptions
    assert rows(group) == [
        ("Acme.Shop.Users.UserService", "UserService.cs", ".ctor", 8, None, True),
        ("Npgsql.Internal.NpgsqlConnector", None, "ReadMessageLong", None, None, False),
    ]
    assert rows(inner) == [
        ("Acme.Shop.Program.<>c__DisplayClass0_0", "Program.cs", "<Main>b__0", 12, None, True),
        ("System.Linq.Enumerable", None, "First", None, None, False),
        ("Acme.Shop.Services.OrderService", "OrderService.cs", "GetAsync", 57, None, True),
    ]
    assert inner.frames[0].abs_path == "C:\\build\\Acme.Shop\\Program.cs"
    assert rows(outer) == [
        ("Acme.Shop.Program", "Program.cs", "Main", 10, None, True),
        ("System.Threading.Tasks.Task", None, "Wait", None, None, False),
    ]


# --------------------------------------------------------------------------- Ruby

RUBY_STACK = """\
/app/app/services/payment_gateway.rb:54:in `rescue in charge': payment for order R1 failed (PaymentGateway::ChargeFailed)
	from /app/app/services/payment_gateway.rb:47:in `charge'
	from /usr/local/bundle/gems/actionpack-7.1.3/lib/abstract_controller/base.rb:224:in `process_action'
/usr/local/lib/ruby/3.2.0/net/http.rb:1603:in `initialize': Failed to open TCP connection (execution expired) (Net::OpenTimeout)
	from <internal:kernel>:187:in `loop'
	from /app/app/services/payment_gateway.rb:49:in `block (2 levels) in charge'
"""


def test_ruby_cause_chain() -> None:
    parsed = parse_stacktrace(RUBY_STACK)
    assert parsed.language == "ruby"
    assert chain(parsed) == [
        ("Net::OpenTimeout", "Failed to open TCP connection (execution expired)", "cause"),
        ("PaymentGateway::ChargeFailed", "payment for order R1 failed", None),
    ]
    cause, outer = parsed.exceptions
    assert rows(cause) == [
        (None, "/app/app/services/payment_gateway.rb", "block (2 levels) in charge", 49, None, True),
        (None, "<internal:kernel>", "loop", 187, None, False),
        (None, "/usr/local/lib/ruby/3.2.0/net/http.rb", "initialize", 1603, None, False),
    ]
    assert rows(outer) == [
        (
            None,
            "/usr/local/bundle/gems/actionpack-7.1.3/lib/abstract_controller/base.rb",
            "process_action",
            224,
            None,
            False,
        ),
        (None, "/app/app/services/payment_gateway.rb", "charge", 47, None, True),
        (None, "/app/app/services/payment_gateway.rb", "rescue in charge", 54, None, True),
    ]


def test_ruby_34_quotes_and_bare_backtrace() -> None:
    text = "test.rb:1:in 'Integer#/': divided by 0 (ZeroDivisionError)\n\tfrom test.rb:1:in '<main>'\n"
    parsed = parse_stacktrace(text)
    assert chain(parsed) == [("ZeroDivisionError", "divided by 0", None)]
    assert rows(parsed.exceptions[0]) == [
        (None, "test.rb", "<main>", 1, None, True),
        (None, "test.rb", "Integer#/", 1, None, True),
    ]
    # A Rails log's backtrace: frames only, type and message from the attributes.
    rails = "app/models/user.rb:10:in `save'\napp/controllers/users_controller.rb:5:in `create'\n"
    parsed = parse_stacktrace(rails, language="ruby", exc_type="RuntimeError", exc_message="boom")
    assert chain(parsed) == [("RuntimeError", "boom", None)]
    assert [f.function for f in parsed.exceptions[0].frames] == ["create", "save"]


# --------------------------------------------------------------------------- detection, hints, in-app


@pytest.mark.parametrize(
    ("text", "language"),
    [
        (PYTHON_CHAINED, "python"),
        (NODE_STACK, "javascript"),
        (JAVA_STACK, "java"),
        (GO_PANIC, "go"),
        (DOTNET_STACK, "dotnet"),
        (RUBY_STACK, "ruby"),
        ("just a log line without any frame", None),
    ],
)
def test_detect_language(text: str, language: str | None) -> None:
    assert detect_language(text) == language


def test_unknown_text_has_no_frames_and_no_error() -> None:
    parsed = parse_stacktrace("something went wrong\nsee the logs", exc_type="Oops", exc_message="m")
    assert parsed.language is None
    assert chain(parsed) == [("Oops", "m", None)]
    assert not parsed.has_frames
    assert parse_stacktrace("").exceptions == []
    assert parse_stacktrace(None, exc_type="E").exceptions[0].type == "E"


def test_a_wrong_hint_falls_back_to_detection() -> None:
    parsed = parse_stacktrace(JAVA_STACK, language="python")
    assert parsed.language == "java"
    assert parsed.has_frames


def test_in_app_include_and_exclude_override_the_defaults() -> None:
    rules = InAppRules(
        include=("org.postgresql.",), exclude=("com.acme.shop.io.", "com.acme.shop.orders.OrderService$$")
    )
    parsed = parse_stacktrace(JAVA_STACK, in_app=rules)
    suppressed, cause, _ = parsed.exceptions
    assert [f.in_app for f in suppressed.frames] == [False]
    assert [(f.module, f.in_app) for f in cause.frames] == [
        ("jdk.internal.reflect.NativeMethodAccessorImpl", False),
        ("com.acme.shop.orders.OrderService$$Lambda/0x00007f3c8c00a000", False),
        ("com.acme.shop.orders.OrderService", True),
        ("com.acme.shop.orders.OrderService$$SpringCGLIB$$0", False),
        ("org.postgresql.core.v3.QueryExecutorImpl", True),
    ]
    # Paths are prefixes too, and the longest matching prefix decides.
    both = InAppRules(include=("/srv/app/.venv/lib/python3.11/site-packages/psycopg/",), exclude=("/srv/app/",))
    parsed = parse_stacktrace(PYTHON_CHAINED, in_app=both)
    assert [f.in_app for f in parsed.exceptions[0].frames] == [True]
    assert [f.in_app for f in parsed.exceptions[1].frames] == [False, False, False, False, False]
    inverse = InAppRules(include=("/srv/app/",), exclude=("/srv/app/.venv/",))
    parsed = parse_stacktrace(PYTHON_CHAINED, in_app=inverse)
    assert [f.in_app for f in parsed.exceptions[0].frames] == [False]
    assert [f.in_app for f in parsed.exceptions[1].frames] == [True, False, False, False, True]
    tie = InAppRules(include=("/srv/app/",), exclude=("/srv/app/",))
    assert all(f.in_app for f in parse_stacktrace(PYTHON_CHAINED, in_app=tie).exceptions[0].frames)


def test_sentry_style_dicts_round_trip() -> None:
    parsed = parse_stacktrace(PYTHON_CHAINED)
    data = parsed.to_dict()
    again = exceptions_from_dicts(data["values"], language="python")
    assert again.language == "python"
    assert [e.to_dict() for e in again.exceptions] == data["values"]
    frame = Frame.from_dict({"function": "f", "lineno": "12", "in_app": True, "pre_context": ["a"] * 20})
    assert (frame.function, frame.lineno, frame.in_app, frame.pre_context) == ("f", None, True, ["a"] * 5)


# --------------------------------------------------------------------------- size and pathological input


@pytest.mark.timeout(30)
def test_a_five_thousand_line_trace_is_parsed_and_capped() -> None:
    lines = ["Traceback (most recent call last):"]
    for i in range(2500):
        lines.append(f'  File "/srv/app/deep.py", line {i + 1}, in level_{i}')
        lines.append(f"    return level_{i + 1}(x)")
    lines.append("RecursionError: maximum recursion depth exceeded")
    parsed = parse_stacktrace("\n".join(lines))
    exc = parsed.exceptions[0]
    assert exc.type == "RecursionError"
    assert len(exc.frames) == 256
    assert exc.frames_omitted == 2500 - 256
    assert exc.frames[0].function == "level_0"
    assert exc.frames[-1].function == "level_2499"


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "line",
    [
        "    at " + "(" * 200_000,
        "    at a" + " (" * 100_000 + ":1:2)",
        '  File "' + "a" * 300_000,
        "x.rb:1:in `" * 20_000,
        "\t" + "a.go:1 " * 50_000,
        "f@" * 100_000 + ":1:1",
        "   at " + "A." * 100_000 + " in " * 1000 + ":line 1",
        "Caused by: " + "a." * 200_000,
    ],
    ids=["v8-parens", "v8-nested", "python-file", "ruby-in", "go-file", "gecko-at", "dotnet-in", "java-caused-by"],
)
def test_pathological_lines_do_not_blow_up(line: str) -> None:
    parsed = parse_stacktrace(line + "\n" + line)
    assert "lines longer than 4096 characters cut" in parsed.notes
    for exc in parsed.exceptions:
        for frame in exc.frames:
            assert len(frame.abs_path or "") <= 4096


@pytest.mark.timeout(30)
def test_more_than_a_mebibyte_is_truncated_with_a_note() -> None:
    frames = "".join(f"\tat com.acme.Deep.level{i}(Deep.java:{i})\n" for i in range(60_000))
    text = "java.lang.StackOverflowError\n" + frames
    assert len(text) > 1 << 20
    parsed = parse_stacktrace(text)
    assert parsed.truncated
    assert any("truncated" in note for note in parsed.notes)
    exc = parsed.primary
    assert exc is not None and exc.type == "java.lang.StackOverflowError"
    assert len(exc.frames) == 256
    # The head (the newest frames, printed first) and the tail both survive.
    assert exc.frames[-1].function == "level0"
    assert exc.frames[0].function == "level59999"
