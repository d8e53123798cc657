"""OTTL conditions: the boolean part of the OpenTelemetry Transformation Language.

``parse_condition`` reads one condition, ``compile_condition`` checks it against a context
(paths, converters, enums, regexps) and turns it into Python source, and ``build_program``
joins the conditions of one signal into a single generated filter function. See
``docs/filter.md`` for the language subset AppGuard supports.
"""

from collector.ottl.ast import OTTLError
from collector.ottl.compiler import (
    ERROR_MODES,
    CompiledCondition,
    ConditionFailed,
    Program,
    apply_plan,
    build_program,
    compile_condition,
    infer_context,
    plan_is_empty,
)
from collector.ottl.parser import parse_condition
from collector.ottl.re2 import RE2Error, compile_re2

__all__ = [
    "ERROR_MODES",
    "CompiledCondition",
    "ConditionFailed",
    "OTTLError",
    "Program",
    "RE2Error",
    "apply_plan",
    "build_program",
    "compile_condition",
    "compile_re2",
    "infer_context",
    "parse_condition",
    "plan_is_empty",
]
