"""The command line: run, check-config, candidates, status, events,
print-default-config, install-service, uninstall-service. Exit codes: 0 fine, 2 bad config or usage, 1 fatal."""
from __future__ import annotations

import gc
import os
import sys
import time

from oorkiller import __version__
from oorkiller.config import (
    ConfigError, config_warnings, default_config, default_config_text, load_config,
)

SYSTEM_CONFIG = "/etc/oorkiller/oorkiller.yaml"
EXIT_OK, EXIT_FATAL, EXIT_CONFIG = 0, 1, 2


# ---------------------------------------------------------------- config
def resolve_config(path: str | None):
    """(-c FILE) or /etc/oorkiller/oorkiller.yaml or the embedded default."""
    if path is None and os.path.exists(SYSTEM_CONFIG):
        path = SYSTEM_CONFIG
    if path is None:
        return default_config(), None
    return load_config(path), path


def make_writer(config, to_kmsg: bool | None = None):
    from oorkiller.record.writer import RecordWriter
    kmsg = config.log.kmsg if to_kmsg is None else to_kmsg
    return RecordWriter(kmsg=kmsg, stderr=config.log.stderr)


# Modules only the parsing of the command line used (gettext, argparse's,
# brought locale). The daemon runs for months with its memory locked; it
# starts without them.
PARSING_ONLY = ("argparse", "gettext", "locale", "oorkiller.cli.events")


def forget_the_command_line() -> None:
    """Drop the parsing-only modules (imported again if ever needed) and
    collect them now, before the daemon locks its memory."""
    for name in PARSING_ONLY:
        sys.modules.pop(name, None)
    globals().pop("events", None)    # the package's handle on oorkiller.cli.events
    gc.collect()


# ---------------------------------------------------------------- commands
def cmd_run(args) -> int:
    forget_the_command_line()
    from oorkiller.daemon import Daemon
    config, path = resolve_config(args.config)
    writer = make_writer(config)
    try:
        return Daemon(config, writer, config_path=path, dry_run=args.dry_run).run()
    finally:
        writer.close()


def cmd_check_config(args) -> int:
    """Problems: listed, exit 2. Warnings (valid but unsafe): listed, exit 0."""
    try:
        config = load_config(args.file)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    for warning in config_warnings(config):
        print(warning, file=sys.stderr)
    print(f"{args.file}: ok")
    return EXIT_OK


def cmd_service(args) -> int:
    from oorkiller.cli import service
    return service.run_from_args(args)


def cmd_print_default_config(_args) -> int:
    sys.stdout.write(default_config_text())
    return EXIT_OK


def cmd_events(args) -> int:
    from oorkiller.cli import events
    return events.run_from_args(args)


def _build_shield(name: str, config):
    """A shield that reads and ranks; nothing here hands its decisions to an
    engine, so it can never act."""
    from oorkiller.judge.rules import RuleSet
    from oorkiller.proc._proctable import raise_fd_limit
    from oorkiller.shields import shield_class
    from oorkiller.shields.base import Context
    raise_fd_limit()
    cls = shield_class(name)
    return None if cls is None else cls(Context(config=config, rules=RuleSet(config)))


def warn_if_processes_hidden() -> None:
    from oorkiller import kernel
    hidden = kernel.hidden_processes()
    if hidden:
        print(f"oorkiller: note: {hidden}; only what this user may see is listed (run as root)",
              file=sys.stderr)


def cmd_candidates(args) -> int:
    config, _ = resolve_config(args.config)
    warn_if_processes_hidden()
    name = args.resource
    shield = _build_shield(name, config)
    if shield is None:
        print(f"oorkiller: the {name} shield is not available in this build", file=sys.stderr)
        return EXIT_FATAL
    result = {"resource": name, **shield.candidates(args.top)}
    if args.json:
        import json
        print(json.dumps(_jsonable(result), indent=None))
    else:
        from oorkiller.cli.display import print_candidates
        print_candidates(result, sys.stdout)
    return EXIT_OK


def cmd_status(args) -> int:
    from oorkiller.shields import enabled_shields
    config, _ = resolve_config(args.config)
    rows = []
    for name in enabled_shields(config):
        try:
            shield = _build_shield(name, config)
            if shield is None:
                rows.append({"resource": name, "state": "unavailable"})
                continue
            rows.extend(shield.status())
        except Exception as err:   # one broken reading must not hide the others
            rows.append({"resource": name, "state": "error", "reason": f"{type(err).__name__}: {err}"})
    if args.json:
        import json
        print(json.dumps(_jsonable({"time": time.time(), "resources": rows})))
    else:
        from oorkiller.cli.display import print_status
        print_status(rows, sys.stdout)
    return EXIT_OK


def _jsonable(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------- parser
def help_formatter(prog):
    """argparse's own formatter, told the terminal's width as shutil would
    find it: argparse asks shutil otherwise, which loads the bz2, lzma and
    zlib libraries into a daemon that never compresses anything."""
    import argparse
    try:
        columns = int(os.environ.get("COLUMNS", "0")) or os.get_terminal_size(sys.__stdout__.fileno()).columns
    except (ValueError, OSError, AttributeError):
        columns = 80
    return argparse.HelpFormatter(prog, width=max(columns - 2, 20))


def build_parser():
    import argparse                  # imported here: the daemon drops it (forget_the_command_line)
    parser = argparse.ArgumentParser(prog="oorkiller", description="Out Of Resource killer",
                                     formatter_class=help_formatter)
    parser.add_argument("--version", action="version", version=f"oorkiller {__version__}")
    sub = parser.add_subparsers(dest="command", required=True,
                                parser_class=lambda **kw: argparse.ArgumentParser(
                                    formatter_class=help_formatter, **kw))

    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("-c", "--config")
    run.add_argument("--dry-run", action="store_true", help="decide and log everything, act on nothing")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_config)

    cand = sub.add_parser("candidates", help="rank the processes that would be chosen now")
    cand.add_argument("-c", "--config")
    cand.add_argument("--resource", choices=["memory", "cpu", "io", "tasks", "files"], default="memory")
    cand.add_argument("--top", type=int, default=10)
    cand.add_argument("--json", action="store_true")
    cand.set_defaults(func=cmd_candidates)

    status = sub.add_parser("status", help="one line per watched resource")
    status.add_argument("-c", "--config")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    events = sub.add_parser("events", help="read this program's records from the kernel log")
    from oorkiller.cli import events as events_module
    events_module.add_arguments(events)
    events.set_defaults(func=cmd_events)

    default = sub.add_parser("print-default-config", help="print the embedded default configuration")
    default.set_defaults(func=cmd_print_default_config)

    for name, does in (("install-service", "write the systemd unit, and the default configuration if absent"),
                       ("uninstall-service", "remove the unit install-service wrote (never the configuration)")):
        service = sub.add_parser(name, help=does)
        service.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
        service.add_argument("--unit-dir", default="/etc/systemd/system")
        service.add_argument("--config-dir", default="/etc/oorkiller")
        service.set_defaults(func=cmd_service)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(str(err), file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        return EXIT_OK
    except Exception as err:
        print(f"oorkiller: fatal: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_FATAL


if __name__ == "__main__":
    raise SystemExit(main())
