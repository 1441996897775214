"""python -m bench [--quick] [--only NAMES] [--compare PREVIOUS.json] [--out DIR]

Runs the performance suite (selection, fasthog, idle, ticks, worstcase), prints the
table of ratios, writes the JSON report and PNG plots, and flags every ratio
worse by more than 20% than in PREVIOUS (default: the newest report already
in bench/results/) where oorkiller's own figure in it got worse by as much
(a ratio that moved only because a peer or the floor did is listed, not
flagged; a figure in absolute units is flagged only when it misses its
target and got worse by more than 20%). Exit 0, or 1 when a regression is
flagged.
Run bench/setup-peers.sh once first (earlyoom, nohang, matplotlib).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys

from bench import report
from bench.harness import ROOT, log

SCENARIOS = ("selection", "fasthog", "idle", "ticks", "worstcase")
RESULTS = os.path.join(ROOT, "bench", "results")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[2])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--compare", metavar="JSON", help="a previous report to compare with")
    parser.add_argument("--out", default=RESULTS, help="where the report and plots go")
    parser.add_argument("--report-only", metavar="JSON", help="only print/compare/plot an existing report")
    return parser.parse_args(argv)


def is_report(path: str) -> bool:
    """A report of this suite (not the soak's verdict or another JSON beside it)."""
    try:
        with open(path) as f:
            content = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(content, dict) and "machine" in content and any(s in content for s in SCENARIOS)


def previous_report(out: str, exclude: str | None) -> str | None:
    found = sorted(glob.glob(os.path.join(out, "*.json")), key=os.path.getmtime)
    found = [f for f in found if f != exclude and is_report(f)]
    return found[-1] if found else None


def main(argv=None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("python -m bench: needs root (PID namespaces, tmpfs mounts)", file=sys.stderr)
        return 2
    missing = [tool for tool in ("earlyoom", "nohang", "unshare", "cc") if shutil.which(tool) is None]
    if missing:
        print(f"python -m bench: missing {', '.join(missing)}: run bench/setup-peers.sh", file=sys.stderr)
        return 2
    baseline = args.compare or previous_report(args.out, None)
    before = None
    if baseline:
        with open(baseline) as f:
            before = json.load(f)           # read now: this run may overwrite the file
    if args.report_only:
        with open(args.report_only) as f:
            results = json.load(f)
        path = args.report_only
    else:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = set(wanted) - set(SCENARIOS)
        if unknown:
            print(f"python -m bench: unknown scenario(s): {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        results = {"machine": report.machine(), "quick": args.quick}
        for name in wanted:
            log(f"scenario {name}{' (quick)' if args.quick else ''}")
            module = __import__(f"bench.{name}", fromlist=["run"])
            results[name] = module.run(quick=args.quick)
        name = "quick" if args.quick else "report"
        os.makedirs(args.out, exist_ok=True)
        path = report.write_json(results, args.out, name)
        results["plots"] = [os.path.relpath(p, ROOT) for p in report.plots(results, args.out)]
        report.write_json(results, args.out, name)
    print(report.table(results))
    print(f"\nreport: {path}")
    if before is not None and not (args.report_only and os.path.samefile(baseline, path)):
        flagged, moved = report.compare(results, before)
        print(f"compared with {baseline}: "
              + (f"{len(flagged)} regression(s) flagged" if flagged else "no regression"))
        for line in flagged:
            print(f"  REGRESSION {line}")
        for line in moved:
            print(f"  {report.moved_kind(line)}: {line}")
        return 1 if flagged else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
