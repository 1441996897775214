"""Every record reaches the kernel log, one write per record, even past
the kernel's rate limit; when /dev/kmsg is unusable, records go to stderr and
the daemon keeps working; reading back never crashes and reports overwritten
records. Against the REAL /dev/kmsg where it matters; records use event=test
and a `run=` field unique to the test, so the kernel log stays readable."""
import io
import os
import threading
import time
import uuid

import pytest

from oorkiller.record import writer as kmsg
from oorkiller.record.writer import RecordWriter, devkmsg_mode
from oorkiller.proc.kmsg import parse_kmsg_entry
from oorkiller.record.reader import read_records
from oorkiller.record.logfmt import parse_record

KMSG = "/dev/kmsg"
needs_kmsg = pytest.mark.skipif(not os.access(KMSG, os.R_OK | os.W_OK),
                                reason="needs a readable and writable /dev/kmsg (root)")


@pytest.fixture
def run_id():
    return f"t{uuid.uuid4().hex[:12]}"


def records_of(run_id):
    return [record for record in read_records(KMSG) if record.get("run") == run_id]


def wait_for_records(run_id, count, timeout):
    deadline = time.monotonic() + timeout
    found = records_of(run_id)
    while len(found) < count and time.monotonic() < deadline:
        time.sleep(0.2)
        found = records_of(run_id)
    return found


def file_writer(tmp_path, **options):
    """A writer whose "kmsg" is a regular file: every write lands, one per line."""
    target = tmp_path / "kmsg"
    target.touch()
    writer = RecordWriter(kmsg_path=str(target), stderr=False, stderr_stream=io.StringIO(),
                          **options)
    return writer, target


def lines_of(target):
    return target.read_bytes().splitlines()


# ---- the real kernel log

@needs_kmsg
def test_record_reaches_the_kernel_log_exactly(run_id):
    name = b"evil\nevent=kill pid=1 \xff\\ \"q\" \x1b[31m"
    with RecordWriter(stderr=False, program_pid=4321) as writer:
        writer.emit("test", level="warning", run=run_id, resource="memory", name=name, score=12)
    [record] = wait_for_records(run_id, 1, timeout=2)
    assert record["event"] == "test" and record["level"] == "warning"
    assert record["program_pid"] == 4321 and record["resource"] == "memory"
    assert record["name"] == name.decode("utf-8", "surrogateescape")
    assert record["score"] == "12"
    assert record["seq"] >= 0 and record["usec"] > 0


@needs_kmsg
@pytest.mark.skipif(devkmsg_mode() != "ratelimit", reason="kernel.printk_devkmsg is not ratelimit")
def test_kernel_really_drops_past_ten_records_per_open_file(run_id):
    # The control for the next test: a naive writer loses records here.
    fd = os.open(KMSG, os.O_WRONLY)
    try:
        for number in range(15):
            os.write(fd, f"<30>oorkiller[{os.getpid()}]: event=test run={run_id} n={number}\n".encode())
    finally:
        os.close(fd)
    assert len(records_of(run_id)) <= 10


@needs_kmsg
def test_fifty_records_in_ten_seconds_all_reach_the_log(run_id):
    writer = RecordWriter(stderr=False)
    try:
        started = time.monotonic()
        for number in range(50):
            writer.emit("test", run=run_id, n=number)
        assert time.monotonic() - started < 0.5, "emit must not wait for the rate limit"
        found = wait_for_records(run_id, 50, timeout=10)
    finally:
        writer.close()
    assert sorted(int(record["n"]) for record in found) == list(range(50))


@needs_kmsg
def test_close_writes_out_the_queue(run_id):
    writer = RecordWriter(stderr=False)
    for number in range(60):
        writer.emit("test", run=run_id, n=number)
    writer.close()
    assert len(records_of(run_id)) == 60


@needs_kmsg
def test_since_keeps_recent_records_only(run_id):
    with RecordWriter(stderr=False) as writer:
        writer.emit("test", run=run_id)
    assert [r for r in read_records(KMSG, since=30) if r.get("run") == run_id]
    uptime = time.clock_gettime(time.CLOCK_MONOTONIC)
    every = list(read_records(KMSG, since=uptime + 10))
    recent = list(read_records(KMSG, since=0.0001))
    assert any(r.get("run") == run_id for r in every)
    assert not any(r.get("run") == run_id for r in recent)


# ---- /dev/kmsg unusable: stderr, no exception

@pytest.mark.parametrize("path", ["/nonexistent/kmsg", "/proc/version", "/"])
def test_unusable_kmsg_falls_back_to_stderr(path):
    stderr = io.StringIO()
    writer = RecordWriter(kmsg_path=path, stderr=False, stderr_stream=stderr)
    for number in range(3):
        writer.emit("test", resource="disk", n=number)
    writer.close()
    lines = stderr.getvalue().splitlines()
    assert len([line for line in lines if "warning" in line]) == 1
    assert [line for line in lines if "warning" not in line] == [
        f"oorkiller: test resource=disk n={number}" for number in range(3)]
    assert not writer.kmsg_active


def test_devkmsg_off_means_stderr_only(tmp_path):
    sysctl = tmp_path / "printk_devkmsg"
    sysctl.write_text("off\n")
    stderr = io.StringIO()
    target = tmp_path / "kmsg"
    target.touch()
    writer = RecordWriter(kmsg_path=str(target), stderr_stream=stderr, sysctl_path=str(sysctl))
    writer.emit("test", n=1)
    writer.emit("test", n=2)
    writer.close()
    assert target.read_bytes() == b""
    assert stderr.getvalue().count("printk_devkmsg=off") == 1
    assert "oorkiller: test n=1\n" in stderr.getvalue()


def test_stderr_gets_the_human_form_too(tmp_path):
    stderr = io.StringIO()
    target = tmp_path / "kmsg"
    target.touch()
    with RecordWriter(kmsg_path=str(target), stderr_stream=stderr, program_pid=7) as writer:
        writer.emit("kill", level="warning", resource="memory", pid=4242, name="a b")
    assert stderr.getvalue() == 'oorkiller: kill resource=memory pid=4242 name="a b"\n'
    assert target.read_bytes() == b'<28>oorkiller[7]: event=kill resource=memory pid=4242 name="a b"\n'


def test_a_bad_key_never_costs_a_record(tmp_path):
    writer, target = file_writer(tmp_path)
    writer.emit("test", **{"Cgroup-Version": 2, "seq": 5})
    writer.close()
    assert lines_of(target)[0].endswith(b"event=test cgroup_version=2 field_seq=5")


def test_devkmsg_mode_reads_the_sysctl(tmp_path):
    sysctl = tmp_path / "printk_devkmsg"
    for mode in ("on", "off", "ratelimit"):
        sysctl.write_text(mode + "\n")
        assert devkmsg_mode(str(sysctl)) == mode
    assert devkmsg_mode(str(tmp_path / "missing")) == "ratelimit"


# ---- the budget, the queue and the merge (a regular file stands for kmsg)

def test_budget_writes_at_once_then_queues(tmp_path):
    writer, target = file_writer(tmp_path, sysctl_path="/nonexistent")
    at_once = kmsg.MAX_SLOTS * kmsg.SLOT_BUDGET
    for number in range(at_once + 5):
        writer.emit("test", n=number)
    assert len(lines_of(target)) == at_once
    writer.close()
    assert len(lines_of(target)) == at_once + 5


def test_devkmsg_on_has_no_budget(tmp_path):
    sysctl = tmp_path / "printk_devkmsg"
    sysctl.write_text("on\n")
    writer, target = file_writer(tmp_path, sysctl_path=str(sysctl))
    for number in range(100):
        writer.emit("test", n=number)
    assert len(lines_of(target)) == 100
    writer.close()


def test_overflowing_queue_merges_records_and_counts_them(tmp_path):
    writer, target = file_writer(tmp_path, sysctl_path="/nonexistent")
    emitted = kmsg.MAX_SLOTS * kmsg.SLOT_BUDGET + kmsg.MAX_QUEUED + 40
    for number in range(emitted):
        writer.emit("test", resource="memory" if number % 2 else "cpu", n=number)
    writer.close()
    parsed = [parse_record(line.split(b">", 1)[1]) for line in lines_of(target)]
    merged = [record for record in parsed if "merged" in record]
    assert merged, "an overflowing queue must merge"
    assert sum(int(record.get("merged", 1)) for record in parsed) == emitted
    assert parsed[-1]["n"] == str(emitted - 1)  # a merged record carries the latest fields


def test_emit_is_thread_safe(tmp_path):
    sysctl = tmp_path / "printk_devkmsg"
    sysctl.write_text("on\n")
    writer, target = file_writer(tmp_path, sysctl_path=str(sysctl))

    def emit_many(thread):
        for number in range(200):
            writer.emit("test", thread=thread, n=number, name="x" * 500)

    threads = [threading.Thread(target=emit_many, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    parsed = [parse_record(line.split(b">", 1)[1]) for line in lines_of(target)]
    assert len(parsed) == 800 and all(parsed)


def test_emit_after_close_goes_to_stderr(tmp_path):
    writer, target = file_writer(tmp_path)
    writer.close()
    writer.emit("test", n=1)
    assert target.read_bytes() == b""


# ---- reading: kernel format, EPIPE, since

def kmsg_line(seq, text, usec=1_000_000, prio=30):
    return f"{prio},{seq},{usec},-;{text}\n".encode()


class FakeKmsg:
    """A file-like /dev/kmsg: one entry per read(); an exception is raised."""

    def __init__(self, *entries):
        self.entries = list(entries)

    def read(self, size):
        if not self.entries:
            return b""
        entry = self.entries.pop(0)
        if isinstance(entry, BaseException):
            raise entry
        return entry


def test_kernel_escapes_are_undone_and_foreign_records_skipped():
    stream = FakeKmsg(
        kmsg_line(1, "systemd[1]: event=kill"),
        kmsg_line(2, 'oorkiller[9]: event=test name=a\\x5c\\x5cb\\x5cn uni="\\xc3\\xa9 x"', prio=27)
        + b" SUBSYSTEM=x\n DEVICE=y\n",
        b"garbage without separator",
    )
    [record] = read_records(stream=stream)
    assert record == {"seq": 2, "usec": 1_000_000, "level": "err", "program_pid": 9,
                      "event": "test", "name": "a\\b\n", "uni": "é x"}


def test_epipe_is_reported_as_lost_with_the_gap(tmp_path):
    stream = FakeKmsg(
        kmsg_line(10, "oorkiller[9]: event=test n=10"),
        kmsg_line(11, "other: hello"),
        BrokenPipeError(),
        kmsg_line(20, "oorkiller[9]: event=test n=20"),
    )
    events = [(r["event"], r.get("n"), r.get("count")) for r in read_records(follow=True, stream=stream)]
    assert events == [("test", "10", None), ("lost", None, 8), ("test", "20", None)]


def test_epipe_before_any_record_has_an_unknown_count():
    stream = FakeKmsg(BrokenPipeError(), kmsg_line(5, "oorkiller[9]: event=test"))
    assert [r["event"] for r in read_records(stream=stream)] == ["lost", "test"]


def test_since_drops_old_records():
    now_usec = int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1_000_000)
    stream = FakeKmsg(
        kmsg_line(1, "oorkiller[9]: event=test n=old", usec=max(0, now_usec - 120_000_000)),
        kmsg_line(2, "oorkiller[9]: event=test n=new", usec=now_usec - 1_000_000),
    )
    assert [r["n"] for r in read_records(since=60, stream=stream)] == ["new"]


def test_parse_kmsg_entry_handles_junk():
    assert parse_kmsg_entry(b"") is None
    assert parse_kmsg_entry(b"x,y,z,-;text\n") is None
    assert parse_kmsg_entry(b"6,1,2,-,caller=T1;hi\n")["text"] == b"hi"


def test_unreadable_kernel_log_raises_oserror():
    with pytest.raises(OSError):
        list(read_records("/nonexistent/kmsg"))
