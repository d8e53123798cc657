"""``appguard-collector``: run, validate a config, list the components."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from collector.component import Kind
from collector.config import Config, load_config
from collector.confmap import ConfigError
from collector.graph import build_graph
from collector.registry import default_registry
from collector.sourcemaps_cli import add_parser as add_sourcemaps_parser
from collector.sourcemaps_cli import run as cmd_sourcemaps
from collector.telemetry import Telemetry, setup_logging


def default_config_path() -> str:
    """The all-in-one config used when no ``--config`` is given."""
    import config as config_pkg

    return os.path.join(os.path.dirname(config_pkg.__file__), "default.yaml")


def default_data_dir() -> str:
    """``$APPGUARD_DATA_DIR`` or ``~/.local/share/appguard``."""
    env = os.environ.get("APPGUARD_DATA_DIR")
    if env:
        return env
    return os.path.join(os.path.expanduser("~"), ".local", "share", "appguard")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        action="append",
        metavar="URI",
        help="config file (or file:PATH, env:VAR, yaml:key::sub: value); repeat to merge in order",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one value, with '::' between keys: --set=exporters::debug::verbosity=detailed",
    )
    p.add_argument("--data-dir", default=None, help="where embedded servers and queues keep their files")


def _sources(args: argparse.Namespace) -> list[str]:
    sources = list(args.config or [default_config_path()])
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        sources.append(f"yaml:{key}: {value}")
    return sources


def _load(args: argparse.Namespace) -> Config:
    data_dir = args.data_dir or default_data_dir()
    os.environ.setdefault("APPGUARD_DATA_DIR", data_dir)
    args.data_dir = data_dir
    return load_config(_sources(args))


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = _load(args)
    build_graph(cfg, Telemetry(), data_dir=args.data_dir)
    n = len(cfg.service.pipelines)
    print(f"configuration is valid: {n} pipeline{'s' if n != 1 else ''}")
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    data_dir = args.data_dir or default_data_dir()
    os.environ.setdefault("APPGUARD_DATA_DIR", data_dir)
    from api.extension import serve_standalone
    from collector.confmap import load_sources

    raw = load_sources(_sources(args))
    setup_logging()
    serve_standalone(raw, data_dir)
    return 0


def cmd_components(_: argparse.Namespace) -> int:
    registry = default_registry()
    for kind in Kind:
        print(f"{kind.section}:")
        for type_ in registry.types(kind):
            f = registry.get(kind, type_)
            assert f is not None
            if kind is Kind.CONNECTOR:
                sig = ", ".join(sorted(f"{a.value}->{b.value}" for a, b in f.connects))
            else:
                sig = ", ".join(sorted(s.value for s in f.signals))
            extra = f" [{sig}]" if sig else ""
            print(f"  {type_:<24} {f.stability:<12}{extra}  {f.description}".rstrip())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load(args)
    tel = cfg.service.telemetry
    setup_logging(tel.logs.level, tel.logs.encoding)
    from collector.service import Service

    async def main() -> None:
        await Service(cfg, data_dir=args.data_dir).run()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="appguard-collector",
        description="AppGuard: an OpenTelemetry-native collector and error tracker.",
    )
    _add_config_args(parser)
    sub = parser.add_subparsers(dest="command")
    p_val = sub.add_parser("validate", help="check a config and build its pipelines without starting them")
    _add_config_args(p_val)
    sub.add_parser("components", help="list the built-in and installed components")
    p_api = sub.add_parser("api", help="run only the api extensions of a config (the dashboard and REST API)")
    _add_config_args(p_api)
    add_sourcemaps_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = {
        "validate": cmd_validate,
        "components": cmd_components,
        "api": cmd_api,
        "sourcemaps": cmd_sourcemaps,
        None: cmd_run,
    }
    try:
        return commands[args.command](args)
    except ConfigError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
