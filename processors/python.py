"""``python``: run your own Python function on the data passing through a pipeline.

::

    processors:
      python/scrub:
        function: "mypkg.filters:scrub_pii"   # module:attribute, imported at config time
        per: item                             # request (default) or item
        error_mode: propagate                 # propagate (default), ignore or silent
        config: {mask: "***"}                 # passed as `config` if the function takes it

``per: request`` calls ``function(request)`` once per batch with the OTLP export request
(``ExportTraceServiceRequest``, ``ExportMetricsServiceRequest`` or
``ExportLogsServiceRequest``), which it may change in place. ``per: item`` calls
``function(item, resource, scope)`` for every span, log record or metric data point.

The function may also take, by name, ``config`` (the ``config`` mapping), ``signal``
(``"traces"``, ``"metrics"`` or ``"logs"``), ``metadata`` (the client's request metadata,
per request only) and ``metric`` (the data point's metric, per item only). It returns
``None`` or ``True`` to keep what it got, ``False`` or :data:`DROP` to drop it. Coroutine
functions are awaited. What an exception does is ``error_mode``'s choice: ``propagate``
refuses the request (a permanent error), ``ignore`` logs it and keeps the request or item as
the function left it, ``silent`` does the same without logging. See
``docs/python-processor.md``.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from typing import Any, Literal

from pydantic import PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from collector.component import CreateSettings, Factory, Kind, ProcessorBase
from collector.configtypes import ComponentConfig
from collector.consumer import Consumer, PermanentError
from collector.ottl import apply_plan, plan_is_empty
from collector.pdata import Payload, Signal


class _Drop:
    """The value a function returns to drop what it was given (``False`` works too)."""

    def __repr__(self) -> str:
        return "DROP"

    def __bool__(self) -> bool:
        return False


DROP = _Drop()

_FIELDS = {
    Signal.TRACES: ("resource_spans", "scope_spans", "spans"),
    Signal.METRICS: ("resource_metrics", "scope_metrics", "metrics"),
    Signal.LOGS: ("resource_logs", "scope_logs", "log_records"),
}
_OPTIONAL = {"request": ("config", "signal", "metadata"), "item": ("config", "signal", "metric")}


def import_callable(spec: str) -> Callable[..., Any]:
    """Import ``"package.module:attr.path"`` (or ``"package.module.attr"``) and return it."""
    spec = spec.strip()
    if ":" in spec:
        module_name, _, attr_path = spec.partition(":")
    else:
        module_name, _, attr_path = spec.rpartition(".")
    if not module_name or not attr_path:
        raise ValueError(f"{spec!r} is not of the form 'package.module:function'")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may fail in any way while importing
        raise ValueError(f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from None
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attr_path!r}") from None
    if not callable(target):
        raise ValueError(f"{spec!r} is not callable")
    return target  # type: ignore[no-any-return]


def _load_function(spec: str, per: str) -> tuple[Callable[..., Any], frozenset[str]]:
    """Import the function and check it can be called the way ``per`` calls it."""
    func = import_callable(spec)
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return func, frozenset()  # no signature to read (some builtins): positionals only
    positional = ("request",) if per == "request" else ("item", "resource", "scope")
    params = signature.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    keywords = frozenset(
        name for name in _OPTIONAL[per] if takes_any or (name in params and params[name].kind in named)
    )
    try:
        signature.bind(*positional, **dict.fromkeys(keywords))
    except TypeError as exc:
        raise ValueError(
            f"{spec} must accept ({', '.join(positional)}) for per: {per} "
            f"(and optionally {', '.join(_OPTIONAL[per])} by name); its signature is {signature}: {exc}"
        ) from None
    return func, keywords


class PythonConfig(ComponentConfig):
    """The python processor's settings; the function is imported when this is validated."""

    function: str
    config: dict[str, Any] = {}
    per: Literal["request", "item"] = "request"
    error_mode: Literal["ignore", "silent", "propagate"] = "propagate"

    _callable: Callable[..., Any] = PrivateAttr()
    _keywords: frozenset[str] = PrivateAttr(default=frozenset())

    @field_validator("config", mode="before")
    @classmethod
    def _null_config(cls, value: Any) -> Any:
        return {} if value is None else value

    @model_validator(mode="after")
    def _load(self) -> PythonConfig:
        try:
            self._callable, self._keywords = _load_function(self.function, self.per)
        except ValueError as exc:
            # Reported at `function`, the key that names what could not be loaded.
            error = PydanticCustomError("python_function", "{error}", {"error": str(exc)})
            raise ValidationError.from_exception_data(
                "PythonConfig", [InitErrorDetails(type=error, loc=("function",), input=self.function)]
            ) from None
        return self

    @property
    def callable(self) -> Callable[..., Any]:
        """The imported function."""
        return self._callable

    @property
    def keywords(self) -> frozenset[str]:
        """The optional arguments the function takes by name."""
        return self._keywords


class _Failed(Exception):
    """The function raised and ``error_mode`` is ``propagate``."""


class _Call:
    """Calls the function for one request and keeps that request's error tally."""

    def __init__(self, config: PythonConfig) -> None:
        self.config = config
        self.func = config.callable
        self.errors = 0
        self.first_error: BaseException | None = None

    async def __call__(self, *args: Any, **kwargs: Any) -> bool:
        """True to keep what the function got, False to drop it. Errors follow error_mode."""
        try:
            result = self.func(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            return self.failed(exc)
        if result is None or result is True:
            return True
        if result is False or result is DROP:
            return False
        return self.failed(
            TypeError(f"{self.config.function} returned {result!r}: return None or True to keep, False or DROP to drop")
        )

    def failed(self, exc: Exception) -> bool:
        if self.config.error_mode == "propagate":
            raise _Failed(f"{self.config.function} raised {type(exc).__name__}: {exc}") from exc
        if self.config.error_mode == "ignore":
            self.errors += 1
            if self.first_error is None:
                self.first_error = exc
        return True  # keep what the function had, as it left it

    def log(self, logger: logging.Logger, name: str) -> None:
        if self.errors and self.first_error is not None:
            logger.warning(
                "%s: %s failed %d time(s) in this request; data kept as the function left it",
                name,
                self.config.function,
                self.errors,
                exc_info=self.first_error,
            )


class PythonProcessor(ProcessorBase):
    """Calls the configured function on each request or each item."""

    mutates_data = True

    def __init__(self, settings: CreateSettings, config: PythonConfig, signal: Signal, next_consumer: Consumer) -> None:
        super().__init__(settings, signal, next_consumer)
        self.config = config
        self._name = str(settings.id)
        self._telemetry = settings.telemetry.processor(self._name, signal)
        self._kwargs: dict[str, Any] = {}
        if "config" in config.keywords:
            self._kwargs["config"] = config.config
        if "signal" in config.keywords:
            self._kwargs["signal"] = signal.value

    async def consume(self, payload: Payload) -> None:
        """Run the function; pass on what it kept (nothing when it dropped everything)."""
        self._telemetry.incoming(payload.items)
        # The function may change anything: the request is handed over mutable.
        message = payload.mutable()
        call = _Call(self.config)
        try:
            if self.config.per == "request":
                kwargs = dict(self._kwargs)
                if "metadata" in self.config.keywords:
                    kwargs["metadata"] = payload.metadata
                if not await call(message, **kwargs):
                    self._telemetry.outgoing(0)
                    return
            else:
                plan = await self._per_item(message, call)
                if not plan_is_empty(plan):
                    apply_plan(message, self.signal, plan)
        except _Failed as exc:
            raise PermanentError(f"{self._name}: {exc}") from exc.__cause__
        finally:
            call.log(self.settings.logger, self._name)
        payload.refresh_count()
        self._telemetry.outgoing(payload.items)
        if payload.is_empty():
            return
        await self.next.consume(payload)

    async def _per_item(self, message: Any, call: _Call) -> Any:
        """Call the function on every item; the plan of what it dropped (emptied parents too)."""
        resources_field, scopes_field, items_field = _FIELDS[self.signal]
        kwargs = dict(self._kwargs)
        with_metric = "metric" in self.config.keywords
        if with_metric:
            kwargs["metric"] = None
        dr: list[int] = []
        ds: list[tuple[Any, list[int]]] = []
        di: list[tuple[Any, list[int]]] = []
        de: list[tuple[Any, list[int]]] = []
        resources = getattr(message, resources_field)
        for ri, block in enumerate(resources):
            resource = block.resource
            scopes = getattr(block, scopes_field)
            sdel = []
            for si, scope_block in enumerate(scopes):
                scope = scope_block.scope
                items = getattr(scope_block, items_field)
                idel = []
                if self.signal is Signal.METRICS:
                    for ii, metric in enumerate(items):
                        kind = metric.WhichOneof("data")
                        if kind is None:
                            continue
                        points = getattr(metric, kind).data_points
                        if with_metric:
                            kwargs["metric"] = metric
                        pdel = [pi for pi, point in enumerate(points) if not await call(point, resource, scope, **kwargs)]
                        if pdel and len(pdel) == len(points):
                            idel.append(ii)  # a metric left without data points goes too
                        elif pdel:
                            de.append((points, pdel))
                else:
                    idel = [ii for ii, item in enumerate(items) if not await call(item, resource, scope, **kwargs)]
                if idel:
                    di.append((items, idel))
                    if len(idel) == len(items):
                        sdel.append(si)
            if sdel:
                ds.append((scopes, sdel))
                if len(sdel) == len(scopes):
                    dr.append(ri)
        return dr, ds, di, de


def _create(*, settings: CreateSettings, config: PythonConfig, signal: Signal, next_consumer: Consumer) -> PythonProcessor:
    return PythonProcessor(settings, config, signal, next_consumer)


factory = Factory(
    type="python",
    kind=Kind.PROCESSOR,
    config_class=PythonConfig,
    create=_create,
    signals=frozenset(Signal),
    stability="alpha",
    description="runs a user's Python function on each request or item (modify, drop or pass)",
)
