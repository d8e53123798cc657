"""Fingerprints, overrides, rules, titles and culprits."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from exporters.errors.grouping import (
    FingerprintRule,
    Grouper,
    GroupingConfig,
    default_hashes,
    normalize_function,
    normalize_module,
)
from exporters.errors.stacktrace import exceptions_from_dicts, parse_stacktrace

PY_TRACE = """\
Traceback (most recent call last):
  File "{root}/.venv/lib/python3.11/site-packages/flask/app.py", line {lib_line}, in dispatch_request
    return self.ensure_sync(self.view_functions[rule.endpoint])(**view_args)
  File "{root}/shop/views.py", line {line}, in checkout
    total = cart.total()
  File "{root}/shop/cart.py", line {line2}, in total
    return self.prices[item.sku]
KeyError: '{key}'
"""


def py_event(root: str = "/srv/app", line: int = 10, line2: int = 20, key: str = "a", lib_line: int = 852) -> str:
    return PY_TRACE.format(root=root, line=line, line2=line2, key=key, lib_line=lib_line)


def test_line_numbers_paths_and_messages_do_not_change_the_hash() -> None:
    grouper = Grouper(cache_size=0)
    base = grouper.group(stacktrace=py_event())
    moved = grouper.group(
        stacktrace=py_event(root="/home/deploy/releases/42", line=14, line2=31, key="zzz", lib_line=880)
    )
    assert base.hashes == moved.hashes
    assert base.metadata["grouping"] == "app"
    assert len(base.hashes) == 2
    assert (base.primary_hash, base.secondary_hash) == base.hashes


def test_changed_code_line_or_function_splits() -> None:
    grouper = Grouper(cache_size=0)
    base = grouper.group(stacktrace=py_event())
    other_line = grouper.group(stacktrace=py_event().replace("return self.prices[item.sku]", "return self.prices[sku]"))
    other_function = grouper.group(stacktrace=py_event().replace("in total", "in subtotal"))
    other_type = grouper.group(stacktrace=py_event().replace("KeyError: 'a'", "IndexError: 'a'"))
    assert len({base.primary_hash, other_line.primary_hash, other_function.primary_hash, other_type.primary_hash}) == 4


def test_library_frames_only_change_the_secondary_hash() -> None:
    grouper = Grouper(cache_size=0)
    base = grouper.group(stacktrace=py_event())
    other_library = grouper.group(stacktrace=py_event().replace("in dispatch_request", "in full_dispatch_request"))
    assert base.hashes[0] == other_library.hashes[0]
    assert base.hashes[1] != other_library.hashes[1]


def test_secondary_hash_survives_a_change_of_in_app_rules() -> None:
    default = Grouper(cache_size=0).group(stacktrace=py_event())
    # Marking the whole application as not in-app leaves no app frames: the primary hash is
    # then the all-frames one, which equals the secondary hash of the default grouping.
    excluded = Grouper(GroupingConfig(in_app_exclude=["/srv/app/shop/"]), cache_size=0).group(stacktrace=py_event())
    assert excluded.metadata["grouping"] == "system"
    assert excluded.hashes == (default.hashes[1],)
    # Marking a library in-app adds app frames: a new primary, the same secondary.
    included = Grouper(
        GroupingConfig(in_app_include=["/srv/app/.venv/lib/python3.11/site-packages/flask/"]), cache_size=0
    ).group(stacktrace=py_event())
    assert included.hashes[0] != default.hashes[0]
    assert included.hashes[1] == default.hashes[1]


def test_every_exception_of_a_chain_counts() -> None:
    cause = 'Traceback (most recent call last):\n  File "/app/db.py", line 3, in q\n    run()\nOSError: gone\n\n'
    sep = "The above exception was the direct cause of the following exception:\n\n"
    outer = 'Traceback (most recent call last):\n  File "/app/api.py", line 9, in get\n    q()\nRuntimeError: failed\n'
    grouper = Grouper(cache_size=0)
    chained = grouper.group(stacktrace=cause + sep + outer)
    alone = grouper.group(stacktrace=outer)
    other_cause = grouper.group(stacktrace=cause.replace("OSError", "TimeoutError") + sep + outer)
    assert len({chained.primary_hash, alone.primary_hash, other_cause.primary_hash}) == 3


def test_recursion_depth_does_not_matter() -> None:
    frame = '  File "/app/tree.py", line 5, in walk\n    return walk(node.child)\n'
    head = 'Traceback (most recent call last):\n  File "/app/main.py", line 2, in main\n    walk(root)\n'
    grouper = Grouper(cache_size=0)
    shallow = grouper.group(stacktrace=head + frame * 3 + "RecursionError: maximum recursion depth exceeded\n")
    deep = grouper.group(stacktrace=head + frame * 40 + "RecursionError: maximum recursion depth exceeded\n")
    assert shallow.hashes == deep.hashes


def test_without_frames_the_message_is_parameterized() -> None:
    grouper = Grouper(cache_size=0)
    a = grouper.group(
        exc_type="TimeoutError",
        message="GET https://a.example/x?id=1 took 1500ms (request 550e8400-e29b-41d4-a716-446655440000)",
    )
    b = grouper.group(
        exc_type="TimeoutError",
        message="GET https://b.example/y took 20ms (request 6ba7b810-9dad-11d1-80b4-00c04fd430c8)",
    )
    c = grouper.group(exc_type="TimeoutError", message="lock wait took 20ms")
    d = grouper.group(
        exc_type="ValueError",
        message="GET https://b.example/y took 20ms (request 6ba7b810-9dad-11d1-80b4-00c04fd430c8)",
    )
    assert a.hashes == b.hashes
    assert a.metadata["grouping"] == "message"
    assert len({a.primary_hash, c.primary_hash, d.primary_hash}) == 3
    assert (
        a.title
        == "TimeoutError: GET https://a.example/x?id=1 took 1500ms (request 550e8400-e29b-41d4-a716-446655440000)"
    )
    assert a.culprit is None


@pytest.mark.parametrize(
    ("language", "name", "normalized"),
    [
        ("java", "lambda$handle$0", "lambda$handle"),
        ("java", "lambda$static$12", "lambda$static"),
        ("java", "access$100", "access$"),
        ("java", "export$lambda$3", "export$lambda"),
        ("dotnet", "<Main>b__0_1", "<Main>b__"),
        ("dotnet", "<Handle>g__Local|4_0", "<Handle>g__Local"),
        ("dotnet", "lambda_method42", "lambda_method"),
        ("go", "(*Handler).Summary.func1.2", "(*Handler).Summary.func"),
        ("go", "main.gowrap3", "main.gowrap"),
        ("ruby", "block (3 levels) in create", "block in create"),
        ("ruby", "block in UsersController#create", "block in create"),
        ("ruby", "User#save!", "save!"),
        ("ruby", "_app_views_users_show_html_erb__1234567_8901234", "_app_views_users_show_html_erb"),
        ("python", "<lambda>", "<lambda>"),
        ("javascript", "Layer.handle", "Layer.handle"),
        ("javascript", "?", ""),
        ("javascript", "<anonymous>", ""),
        ("javascript", "Object.?", "Object.<anonymous>"),
        ("javascript", "Object.<anonymous>", "Object.<anonymous>"),
    ],
)
def test_function_normalization(language: str, name: str, normalized: str) -> None:
    assert normalize_function(language, name) == normalized


@pytest.mark.parametrize(
    ("language", "module", "normalized"),
    [
        ("java", "com.acme.Foo$$Lambda$123/0x0000000800c0b448", "com.acme.Foo$$Lambda"),
        ("java", "com.acme.Foo$$Lambda/0x00007f3c8c00a000", "com.acme.Foo$$Lambda"),
        ("java", "com.acme.Foo$$Lambda$12/1234567", "com.acme.Foo$$Lambda"),
        ("java", "com.acme.OrderService$$EnhancerBySpringCGLIB$$5f3b2e1a", "com.acme.OrderService$$CGLIB"),
        ("java", "com.acme.OrderService$$SpringCGLIB$$0", "com.acme.OrderService$$CGLIB"),
        ("java", "com.acme.Order$HibernateProxy$AbC12xYz", "com.acme.Order$HibernateProxy"),
        ("java", "jdk.proxy2.$Proxy123", "jdk.proxy.$Proxy"),
        ("java", "jdk.internal.reflect.GeneratedMethodAccessor87", "jdk.internal.reflect.GeneratedMethodAccessor"),
        ("java", "com.acme.Foo$1", "com.acme.Foo$<n>"),
        ("java", "com.acme.Foo$Inner", "com.acme.Foo$Inner"),
        ("java", "com.acme.Dao_$$_javassist_74", "com.acme.Dao_$$_javassist"),
        ("dotnet", "Acme.Program.<>c__DisplayClass5_0", "Acme.Program.<>c__DisplayClass"),
        ("dotnet", "Castle.Proxies.IRepoProxy_12", "Castle.Proxies.IRepoProxy"),
        ("go", "github.com/acme/shop/internal/cart", "github.com/acme/shop/internal/cart"),
    ],
)
def test_module_normalization(language: str, module: str, normalized: str) -> None:
    assert normalize_module(language, module) == normalized


def test_hashed_browser_bundles_group_across_deploys() -> None:
    def stack(name: str) -> str:
        return f"render@https://shop.test/static/js/{name}:1:100\nonClick@https://shop.test/static/js/{name}:1:900\n"

    grouper = Grouper(cache_size=0)
    hashes = {
        grouper.group(stacktrace=stack(name), exc_type="TypeError", message="x is undefined").primary_hash
        for name in ("main.3f2a1b9c.js", "main.8e0d62a1.js", "main-B7xK2m9Q.js")
    }
    other_file = grouper.group(stacktrace=stack("admin.3f2a1b9c.js"), exc_type="TypeError", message="x is undefined")
    assert len(hashes) == 1
    assert other_file.primary_hash not in hashes


def test_a_node_stack_as_text_and_as_sentry_frames_group_alike() -> None:
    text = (
        "TypeError: Cannot read properties of undefined (reading 'amount')\n"
        "    at priceOf (/srv/shop/cart.js:20:21)\n"
        "    at /srv/shop/cart.js:24:49\n"
        "    at Array.reduce (<anonymous>)\n"
        "    at cartTotal (/srv/shop/cart.js:24:21)\n"
        "    at Object.<anonymous> (/srv/shop/cart.js:30:1)\n"
    )
    # What @sentry/node sends for the same error: oldest frame first, a module of its own
    # making, '?' for nameless functions.
    frames = [
        {"filename": "/srv/shop/cart.js", "module": "cart", "function": "Object.?", "lineno": 30, "colno": 1, "in_app": True},
        {"filename": "/srv/shop/cart.js", "module": "cart", "function": "cartTotal", "lineno": 24, "colno": 21, "in_app": True},
        {"filename": "<anonymous>", "function": "Array.reduce", "in_app": False},
        {"filename": "/srv/shop/cart.js", "module": "cart", "function": "?", "lineno": 24, "colno": 49, "in_app": True},
        {"filename": "/srv/shop/cart.js", "module": "cart", "function": "priceOf", "lineno": 20, "colno": 21, "in_app": True},
    ]
    values = [{"type": "TypeError", "value": "Cannot read properties of undefined (reading 'amount')", "stacktrace": {"frames": frames}}]
    grouper = Grouper(cache_size=0)
    from_text = grouper.group(stacktrace=text, exc_type="TypeError", message="x", language="javascript")
    from_frames = grouper.group_parsed(exceptions_from_dicts(values, language="javascript"))
    assert from_text.metadata["grouping"] == from_frames.metadata["grouping"] == "app"
    assert from_frames.primary_hash == from_text.primary_hash
    # Another file is another issue.
    frames[-1]["filename"] = "/srv/shop/price.js"
    other = grouper.group_parsed(exceptions_from_dicts(values, language="javascript"))
    assert other.primary_hash != from_text.primary_hash


# --------------------------------------------------------------------------- overrides


def test_client_fingerprint_replaces_the_default() -> None:
    grouper = Grouper(cache_size=0)
    a = grouper.group(stacktrace=py_event(), fingerprint=["payments", "card-declined"])
    b = grouper.group(stacktrace=py_event().replace("in total", "in other"), fingerprint=["payments", "card-declined"])
    c = grouper.group(stacktrace=py_event(), fingerprint=["payments", "expired"])
    assert a.hashes == b.hashes and len(a.hashes) == 1
    assert a.primary_hash != c.primary_hash
    assert a.metadata["grouping"] == "client"
    assert a.fingerprint == ("payments", "card-declined")


def test_default_variable_extends_each_default_hash() -> None:
    grouper = Grouper(cache_size=0)
    plain = grouper.group(stacktrace=py_event())
    only_default = grouper.group(stacktrace=py_event(), fingerprint=["{{ default }}"])
    assert only_default.hashes == plain.hashes
    eu = grouper.group(stacktrace=py_event(), fingerprint=["{{ default }}", "eu"])
    us = grouper.group(stacktrace=py_event(), fingerprint=["{{ default }}", "us"])
    assert len(eu.hashes) == 2
    assert set(eu.hashes).isdisjoint(plain.hashes)
    assert set(eu.hashes).isdisjoint(us.hashes)
    # The secondary stays independent of in-app detection, as the default one does.
    lib_changed = grouper.group(stacktrace=py_event(lib_line=999), fingerprint=["{{ default }}", "eu"])
    assert lib_changed.hashes == eu.hashes


def test_fingerprint_variables() -> None:
    grouper = Grouper(cache_size=0)
    a = grouper.group(
        stacktrace=py_event(key="x"), fingerprint=["{{ type }}", "{{ function }}", "{{ service }}"], service="shop"
    )
    assert a.fingerprint == ("KeyError", "total", "shop")
    b = grouper.group(exc_type="E", message="order 12 failed", fingerprint=["{{ error.value }}", "{{ unknown }}"])
    assert b.fingerprint == ("order <int> failed", "{{ unknown }}")
    # A single string is accepted as a one-element fingerprint.
    assert grouper.group(exc_type="E", fingerprint="solo").fingerprint == ("solo",)


def make_rules(*rules: dict[str, object]) -> GroupingConfig:
    return GroupingConfig.model_validate({"fingerprint_rules": list(rules)})


def test_server_rules_match_and_win_over_the_client() -> None:
    config = make_rules(
        {
            "match": {"type": "KeyError", "function": "tot*"},
            "fingerprint": ["cart-price"],
            "title": "Price missing: {{ message }}",
        },
        {"match": {"message": "re:^connection (refused|reset)"}, "fingerprint": ["{{ default }}", "network"]},
    )
    grouper = Grouper(config, cache_size=0)
    hit = grouper.group(stacktrace=py_event(), fingerprint=["client-wants-this"])
    assert hit.fingerprint == ("cart-price",)
    assert hit.metadata["grouping"] == "rule"
    assert hit.metadata["fingerprint_rule"] == 0
    assert hit.title == "Price missing: 'a'"
    miss = grouper.group(stacktrace=py_event().replace("in total", "in subtotal"))
    assert miss.metadata["grouping"] == "app"
    net = grouper.group(exc_type="OSError", message="connection reset by peer")
    assert net.metadata["grouping"] == "rule"
    assert net.hashes != Grouper(cache_size=0).group(exc_type="OSError", message="connection reset by peer").hashes


def test_rule_conditions_all_must_hold_and_globs() -> None:
    config = make_rules(
        {"match": {"type": "*Error", "message": "*TIMED OUT*", "service": "checkout"}, "fingerprint": ["timeouts"]},
        {"match": {"module": "/srv/app/shop/*"}, "fingerprint": ["shop-code"]},
    )
    grouper = Grouper(config, cache_size=0)
    assert grouper.group(exc_type="TimeoutError", message="request timed out", service="checkout").fingerprint == (
        "timeouts",
    )
    assert grouper.group(exc_type="TimeoutError", message="request timed out", service="search").fingerprint is None
    assert grouper.group(exc_type="Timeout", message="request timed out", service="checkout").fingerprint is None
    # Frames without a module (Python application files) are matched on their path.
    assert grouper.group(stacktrace=py_event()).fingerprint == ("shop-code",)


def test_rule_config_is_validated() -> None:
    with pytest.raises(ValidationError, match="at least one"):
        make_rules({"match": {}, "fingerprint": ["x"]})
    with pytest.raises(ValidationError, match="regular expression"):
        make_rules({"match": {"message": "re:(unclosed"}, "fingerprint": ["x"]})
    with pytest.raises(ValidationError):
        make_rules({"match": {"type": "E"}, "fingerprint": []})
    with pytest.raises(ValidationError, match="Extra inputs"):
        make_rules({"match": {"type": "E", "level": "error"}, "fingerprint": ["x"]})
    rule = FingerprintRule.model_validate({"match": {"type": "E"}, "fingerprint": ["x"]})
    assert rule.title is None


# --------------------------------------------------------------------------- description


def test_title_culprit_and_metadata() -> None:
    java = (
        "com.acme.OrderNotFound: Order 12 not found\n"
        "\tat com.acme.orders.Repo.find(Repo.java:40)\n"
        "\tat com.acme.api.OrderController.get(OrderController.java:12)\n"
        "\tat org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:1)\n"
    )
    result = Grouper(cache_size=0).group(stacktrace=java)
    assert result.title == "com.acme.OrderNotFound: Order 12 not found"
    assert result.culprit == "com.acme.orders.Repo in find"
    assert result.metadata == {
        "type": "com.acme.OrderNotFound",
        "value": "Order 12 not found",
        "language": "java",
        "grouping": "app",
        "exceptions": 1,
        "frames": 3,
        "in_app_frames": 2,
        "function": "find",
        "module": "com.acme.orders.Repo",
        "filename": "Repo.java",
        "lineno": 40,
    }
    long = Grouper(cache_size=0).group(exc_type="E", message="x" * 500 + "\nsecond line")
    assert len(long.title) == 200 and long.title.endswith("…")
    assert Grouper(cache_size=0).group().title == "<unknown>"


def test_structured_exceptions_from_a_sentry_event() -> None:
    values = [
        {
            "type": "ValueError",
            "value": "bad id 12",
            "stacktrace": {
                "frames": [
                    {
                        "function": "handler",
                        "module": "myapp.views",
                        "filename": "myapp/views.py",
                        "lineno": 5,
                        "in_app": True,
                    },
                    {
                        "function": "loads",
                        "module": "json",
                        "filename": "json/__init__.py",
                        "lineno": 346,
                        "in_app": False,
                    },
                    {"function": "decode", "module": "json.decoder", "abs_path": "/usr/lib/python3.11/json/decoder.py"},
                ]
            },
        }
    ]
    parsed = exceptions_from_dicts(values, language="python")
    result = Grouper(cache_size=0).group_parsed(parsed)
    assert result.metadata["grouping"] == "app"
    assert result.culprit == "myapp.views in handler"
    assert [f.in_app for f in parsed.exceptions[0].frames] == [True, False, False]
    assert default_hashes(parsed).primary == result.primary_hash
    # The operator's prefixes still win over what the SDK sent.
    override = Grouper(GroupingConfig(in_app_include=["json.decoder"]), cache_size=0)
    override.group_parsed(parsed)
    assert [f.in_app for f in parsed.exceptions[0].frames] == [True, False, True]


def test_cache_returns_the_same_result_and_stays_bounded() -> None:
    grouper = Grouper(cache_size=2)
    first = grouper.group(stacktrace=py_event())
    assert grouper.group(stacktrace=py_event()) is first
    grouper.group(stacktrace=py_event(key="b"))
    grouper.group(stacktrace=py_event(key="c"))
    assert len(grouper._cache) == 2
    assert grouper.group(stacktrace=py_event()) is not first
    assert grouper.group(stacktrace=py_event()).hashes == first.hashes


def test_default_hashes_of_nothing() -> None:
    empty = parse_stacktrace(None)
    assert default_hashes(empty).basis == "empty"


DOC_CONFIG = """
in_app_include: ["com.acme.", "/srv/app/vendor/acme-sdk/"]
in_app_exclude: ["com.acme.generated.", "github.com/acme/shop/internal/mocks"]
fingerprint_rules:
  - match:
      type: "*TimeoutError"
      message: "*payments.example.com*"
    fingerprint: ["payment-provider-timeout"]
    title: "Payment provider timed out"
  - match:
      service: checkout
      message: "re:^connection (refused|reset)"
    fingerprint: ["{{ default }}", "network"]
"""


def test_the_documented_yaml_config_loads_and_works() -> None:
    config = GroupingConfig.model_validate(yaml.safe_load(DOC_CONFIG))
    grouper = Grouper(config, cache_size=0)
    timeout = grouper.group(exc_type="ReadTimeoutError", message="GET https://PAYMENTS.example.com/v1 timed out")
    assert (timeout.fingerprint, timeout.title) == (("payment-provider-timeout",), "Payment provider timed out")
    reset = grouper.group(exc_type="OSError", message="connection reset by peer", service="checkout")
    assert reset.metadata["fingerprint_rule"] == 1
    java = "com.acme.generated.Boom: x\n\tat com.acme.generated.Api.call(Api.java:3)\n\tat com.acme.web.Ctl.get(Ctl.java:9)\n"
    frames = grouper.group(stacktrace=java).stacktrace.exceptions[0].frames
    assert [(f.module, f.in_app) for f in frames] == [("com.acme.web.Ctl", True), ("com.acme.generated.Api", False)]
