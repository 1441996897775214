"""`oorkiller events`: print this program's records back from the kernel log.

Wiring for the CLI (cli.py owns the subcommand):

    events.add_arguments(subparsers.add_parser("events", help=...))
    ...
    return events.run_from_args(args)

`run_from_args` calls `run(follow=args.follow, as_json=args.as_json,
since=args.since, resources=args.resources, events=args.events)`; the
option -> argument mapping is ARGUMENT_NAMES, in the same order.
"""
import argparse
import datetime
import math
import os
import sys
import time

from oorkiller.record import reader
from oorkiller.record import logfmt

ARGUMENT_NAMES = ("follow", "as_json", "since", "resources", "events")


def add_arguments(parser):
    """Declare `[--follow] [--json] [--since SECONDS] [--resource R] [--event E]`."""
    parser.add_argument("-f", "--follow", action="store_true",
                        help="keep printing new records as they come (Ctrl-C ends)")
    parser.add_argument("--json", dest="as_json", action="store_true",
                        help="one JSON object per line")
    parser.add_argument("--since", type=_seconds, metavar="SECONDS",
                        help="only records of the last SECONDS seconds")
    parser.add_argument("--resource", dest="resources", action="append", metavar="R",
                        help="only records of this resource (repeatable)")
    parser.add_argument("--event", dest="events", action="append", metavar="E",
                        help="only records of this event, e.g. kill (repeatable)")


def _seconds(text):
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds (like 3600), got {text!r}")
    return seconds


def run_from_args(args, out=None):
    return run(**{name: getattr(args, name) for name in ARGUMENT_NAMES}, out=out)


def run(follow=False, as_json=False, since=None, resources=(), events=(),
        out=None, kmsg_path="/dev/kmsg"):
    """Print the records; 0 when done (also after Ctrl-C or a closed pipe).

    1 when the kernel log cannot be read (the message says why).
    """
    out = out or sys.stdout
    wanted = _Filter(resources or (), events or ())
    to_line = _json_line if as_json else _text_line
    try:
        for record in reader.read_records(kmsg_path, follow=follow, since=since):
            if wanted(record):
                out.write(to_line(record) + "\n")
                if follow:
                    out.flush()
        out.flush()
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        _silence_stdout(out)
        return 0
    except OSError as error:
        print(f"{logfmt.PROGRAM} events: cannot read {kmsg_path}: {os.strerror(error.errno)}",
              file=sys.stderr)
        return 1
    return 0


class _Filter:
    """Keeps the records asked for; a `lost` marker always passes."""

    def __init__(self, resources, events):
        self.resources, self.events = set(resources), set(events)

    def __call__(self, record):
        if record["event"] == "lost":
            return True
        if self.resources and record.get("resource") not in self.resources:
            return False
        return not self.events or record["event"] in self.events


def _wall_time(usec):
    """kmsg timestamps count from boot on the monotonic clock: map to local time."""
    boot = time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)
    moment = datetime.datetime.fromtimestamp(boot + usec / 1_000_000)
    return moment.isoformat(sep=" ", timespec="milliseconds")


def _lost_count(record):
    return "unknown" if record["count"] is None else str(record["count"])


def _text_line(record):
    if record["event"] == "lost":
        return f"event=lost count={_lost_count(record)}"
    program = f"{logfmt.PROGRAM}[{record['program_pid']}]"
    return f"{_wall_time(record['usec'])} {program}: {logfmt.format_fields(record)}"


def _json_line(record):
    # Imported here: the command line imports this module to declare its
    # arguments, and `oorkiller run` must not carry json for its whole life.
    import json
    if record["event"] == "lost":
        return json.dumps({"event": "lost", "count": record["count"]})
    shown = {"time": _wall_time(record["usec"])}
    shown.update((key, _json_safe(value)) for key, value in record.items())
    return json.dumps(shown, ensure_ascii=False)


def _json_safe(value):
    # Bytes that were not UTF-8 come back as lone surrogates, which strict
    # JSON readers refuse: show them as \xNN text instead.
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return value


def _silence_stdout(out):
    """After `| head` closed the pipe, keep Python's exit flush from complaining."""
    if out is not sys.stdout:
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)
