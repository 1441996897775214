"""`oorkiller events [--follow] [--json] [--since SECONDS]`: reads this
program's records back from the kernel log, one line each (JSON lines with
--json), exits 0; Ctrl-C ends a follow cleanly; a closed pipe ends quietly."""
import argparse
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest

from oorkiller.cli import events
from oorkiller.record.writer import RecordWriter

needs_kmsg = pytest.mark.skipif(not os.access("/dev/kmsg", os.R_OK | os.W_OK),
                                reason="needs a readable and writable /dev/kmsg (root)")


@pytest.fixture
def run_id():
    return f"t{uuid.uuid4().hex[:12]}"


def emit(run_id, *records):
    with RecordWriter(stderr=False) as writer:
        for event, fields in records:
            writer.emit(event, run=run_id, **fields)


def output_of(run_id, **options):
    out = io.StringIO()
    assert events.run(out=out, **options) == 0
    return [line for line in out.getvalue().splitlines() if run_id in line]


def parser():
    top = argparse.ArgumentParser(prog="oorkiller events")
    events.add_arguments(top)
    return top


# ---- printing

@needs_kmsg
def test_one_readable_line_per_record(run_id):
    emit(run_id, ("test", {"resource": "memory", "name": b"evil\nevent=kill \xff"}))
    [line] = output_of(run_id)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} oorkiller\[\d+\]: "
        rf'event=test run={run_id} resource=memory name="evil\\nevent=kill \\xff"', line)


@needs_kmsg
def test_json_lines(run_id):
    emit(run_id, ("test", {"resource": "disk", "name": b"a \xff", "files": 3}))
    [line] = output_of(run_id, as_json=True)
    record = json.loads(line)
    assert record["event"] == "test" and record["resource"] == "disk"
    assert record["name"] == "a \\xff" and record["files"] == "3"
    assert record["level"] == "info" and isinstance(record["seq"], int)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", record["time"])


@needs_kmsg
def test_filters_by_resource_and_event(run_id):
    emit(run_id, ("test", {"resource": "memory", "n": 1}), ("test", {"resource": "cpu", "n": 2}),
         ("test-other", {"resource": "memory", "n": 3}))
    assert len(output_of(run_id)) == 3
    assert [l[-3:] for l in output_of(run_id, resources=("memory",))] == ["n=1", "n=3"]
    assert [l[-3:] for l in output_of(run_id, resources=["cpu", "memory"], events=["test"])] == ["n=1", "n=2"]


@needs_kmsg
def test_since(run_id):
    emit(run_id, ("test", {}))
    assert len(output_of(run_id, since=60)) == 1
    assert output_of(run_id, since=0.0001) == []


def test_lost_marker_lines():
    assert events._text_line({"event": "lost", "count": 8}) == "event=lost count=8"
    assert events._text_line({"event": "lost", "count": None}) == "event=lost count=unknown"
    assert json.loads(events._json_line({"event": "lost", "count": 8})) == {"event": "lost", "count": 8}


# ---- errors and endings

def test_unreadable_kernel_log_is_a_clear_error(capsys):
    assert events.run(out=io.StringIO(), kmsg_path="/nonexistent/kmsg") == 1
    assert capsys.readouterr().err == "oorkiller events: cannot read /nonexistent/kmsg: No such file or directory\n"


class ClosedPipe(io.StringIO):
    def write(self, text):
        raise BrokenPipeError()


@needs_kmsg
def test_closed_output_ends_quietly(run_id):
    emit(run_id, ("test", {}))
    assert events.run(out=ClosedPipe()) == 0


def start_follow():
    code = "import sys; from oorkiller.cli import events; sys.exit(events.run(follow=True))"
    return subprocess.Popen([sys.executable, "-c", code], cwd="/", stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def read_until(stream, needle, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if needle.encode() in line:
            return line
    raise AssertionError(f"{needle} never printed")


@needs_kmsg
def test_follow_prints_new_records_and_ctrl_c_ends_cleanly(run_id):
    follower = start_follow()
    try:
        time.sleep(0.5)
        emit(run_id, ("test", {"n": "new"}))
        assert b"n=new" in read_until(follower.stdout, run_id)
        follower.send_signal(signal.SIGINT)
        _, errors = follower.communicate(timeout=10)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0
    assert errors == b""


@needs_kmsg
def test_follow_into_a_closed_pipe_ends_quietly(run_id):
    follower = start_follow()
    try:
        time.sleep(0.5)
        follower.stdout.close()  # like `| head -1` exiting
        emit(run_id, *[("test", {"n": n}) for n in range(3)])
        follower.wait(timeout=10)
        errors = follower.stderr.read()
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0
    assert errors == b""


# ---- the options

def test_options_map_onto_run(monkeypatch):
    calls = []
    monkeypatch.setattr(events, "run", lambda **kwargs: calls.append(kwargs) or 0)
    args = parser().parse_args(["--follow", "--json", "--since", "90",
                                "--resource", "memory", "--resource", "cpu", "--event", "kill"])
    assert events.run_from_args(args) == 0
    assert calls == [{"follow": True, "as_json": True, "since": 90.0,
                      "resources": ["memory", "cpu"], "events": ["kill"], "out": None}]


def test_defaults():
    args = parser().parse_args([])
    assert (args.follow, args.as_json, args.since, args.resources, args.events) == (
        False, False, None, None, None)


@pytest.mark.parametrize("bad", ["soon", "-5", "nan", "inf", ""])
def test_bad_since_is_a_usage_error(bad, capsys):
    with pytest.raises(SystemExit) as stop:
        parser().parse_args(["--since", bad])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert "expected a number of seconds" in error and "Traceback" not in error
