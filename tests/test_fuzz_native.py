"""Hostile input against the native parsers and the record path.

tests/test_readers.py already feeds every parser arbitrary bytes (200
examples). This file adds what a random byte string almost never produces:
files that are *nearly* right — the real layout with numbers that are huge,
negative or missing, lines cut short or made very long, NUL bytes inside —
where a parser is most tempted to read past its buffer or trust a field.
Every parser must give back a record or raise ValueError, and a well-formed
file must give back exactly the numbers written into it.

The C underneath is fuzzed again under AddressSanitizer and UBSan
(bench/asan.sh), where a single byte read past a buffer is a failure.

Example counts (hypothesis, fixed seed budget): 9 parsers x 150 mutated
files + 6 exact round trips x 100 + 300 mixed-bytes = about 2,250 examples,
plus 100,000 mutated inputs in the sanitizer run; the file takes ~15 s.
"""
import json
import os
import random
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from oorkiller.proc import _readers as r
from oorkiller.record.writer import RecordWriter

REPO = Path(__file__).resolve().parent.parent
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EXACT = settings(max_examples=100, deadline=None)
U64 = (1 << 64) - 1

# Numbers a hostile or buggy kernel/file could hold.
NUMBERS = st.one_of(
    st.integers(0, 10**6).map(str),
    st.integers(0, U64).map(str),
    st.integers(U64 + 1, 10**40).map(str),          # wraps, never overflows
    st.integers(-(10**30), -1).map(str),            # a sign where none belongs
    st.sampled_from(["", "-", "--1", "0x10", "1e9", "1.5", "\x00", "٣", "+7",
                     "9" * 300, "-9223372036854775808", "18446744073709551616"]),
)


# ---------------------------------------------------------------- templates
# Each template is a real file's layout with its numbers as {} slots.

TEMPLATES = {
    "meminfo": (r.parse_meminfo, "MemTotal:       {} kB\nMemFree:        {} kB\n"
                "MemAvailable:   {} kB\nBuffers:        {} kB\nCached:         {} kB\n"
                "SwapTotal:      {} kB\nSwapFree:       {} kB\n"),
    "stat": (r.parse_cpu_stat, "cpu  {} {} {} {} {} {} {} {} {} {}\ncpu0 {} 0 0 0 0 0 0 0 0 0\n"
             "cpu1 {} 0 0 0 0 0 0 0 0 0\nintr {} 0\nctxt {}\nbtime {}\n"),
    "loadavg": (r.parse_loadavg, "{}.{} {}.{} {}.{} {}/{} {}\n"),
    "psi": (r.parse_psi, "some avg10={}.{} avg60={}.{} avg300={}.{} total={}\n"
            "full avg10={}.{} avg60={}.{} avg300={}.{} total={}\n"),
    "diskstats": (r.parse_diskstats, "   {}       {} sda {} {} {} {} {} {} {} {} {} {} {} 0 0 0 0\n"
                  "   7       0 loop0 {} 0 {} 0 0 0 0 0 0 0 0\n"),
    "pid_stat": (r.parse_pid_stat, "{} (a b) c) S {} {} {} 0 -1 {} 0 0 0 0 {} {} 0 0 20 0 1 0 {} "
                 "12345 {} 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"),
    "pid_io": (r.parse_pid_io, "rchar: {}\nwchar: {}\nsyscr: {}\nsyscw: {}\nread_bytes: {}\n"
               "write_bytes: {}\ncancelled_write_bytes: {}\n"),
    "pid_status": (r.parse_pid_status, "Name:\tx\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t{}\t{}\t{}\t{}\n"
                   "Gid:\t0\t0\t0\t0\nVmRSS:\t{} kB\nVmPTE:\t{} kB\nVmSwap:\t{} kB\nThreads:\t{}\n"),
    "mountinfo": (r.parse_mountinfo, "{} {} {}:{} / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
                  "{} {} 0:{} /a\\040b /mnt/with\\011tab rw - tmpfs tmpfs rw\n"),
}


def assert_record_or_value_error(parse, data: bytes) -> None:
    try:
        result = parse(data)
    except ValueError:
        return
    assert result is not None
    repr(result)   # every field converts to Python (no garbage pointer)


@st.composite
def mutated_file(draw, template: str) -> bytes:
    """The template filled with hostile numbers, then cut, stretched or salted."""
    text = template.format(*(draw(NUMBERS) for _ in range(template.count("{}"))))
    data = text.encode("utf-8", "surrogateescape")
    for _ in range(draw(st.integers(0, 3))):
        how = draw(st.sampled_from(["cut", "nul", "long-line", "drop-line", "no-newline",
                                    "byte", "duplicate"]))
        at = draw(st.integers(0, len(data)))
        if how == "cut":
            data = data[:at]
        elif how == "nul":
            data = data[:at] + b"\x00" + data[at:]
        elif how == "long-line":
            data = data[:at] + draw(st.sampled_from([b"x", b"9", b" ", b")", b"\\"])) * 70_000 + data[at:]
        elif how == "drop-line":
            lines = data.split(b"\n")
            del lines[draw(st.integers(0, len(lines) - 1))]
            data = b"\n".join(lines)
        elif how == "no-newline":
            data = data.rstrip(b"\n")
        elif how == "byte":
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
        else:
            data = data + data
    return data


def make_fuzz_test(name: str):
    parse, template = TEMPLATES[name]

    @FUZZ
    @given(data=mutated_file(template))
    def test(data):
        assert_record_or_value_error(parse, data)

    test.__name__ = f"test_nearly_valid_{name}_gives_a_record_or_a_value_error"
    return test


for _name in TEMPLATES:
    globals()[f"test_nearly_valid_{_name}_gives_a_record_or_a_value_error"] = make_fuzz_test(_name)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"MemTotal:", b"cpu ", b"some ", b"full ", b"Uid:", b"(", b")",
                                 b" - ", b":", b"\n", b"\x00", b" kB", b"avg10=", b"rchar:",
                                 b"\\04", b"1", b"-1", b"99999999999999999999999", b" "]),
                max_size=40))
def test_any_mix_of_the_formats_tokens_gives_a_record_or_a_value_error(tokens):
    data = b"".join(tokens)
    for parse, _ in TEMPLATES.values():
        assert_record_or_value_error(parse, data)


# ---------------------------------------------------------------- exact values

u64 = st.integers(0, U64)
kib = st.integers(0, U64 // 1024)


@EXACT
@given(st.lists(kib, min_size=7, max_size=7))
def test_meminfo_numbers_come_back_exactly(values):
    m = r.parse_meminfo(TEMPLATES["meminfo"][1].format(*values).encode())
    total, free, available, _buffers, _cached, swap_total, swap_free = (v * 1024 for v in values)
    assert (m.total, m.free, m.available, m.swap_total, m.swap_free) == \
        (total, free, available, swap_total, swap_free)


@EXACT
@given(st.lists(u64, min_size=10, max_size=10))
def test_cpu_stat_numbers_come_back_exactly(ticks):
    text = "cpu  " + " ".join(map(str, ticks)) + "\ncpu0 1\ncpu1 2\ncpu2 3\n"
    c = r.parse_cpu_stat(text.encode())
    assert [c.user, c.nice, c.system, c.idle, c.iowait, c.irq, c.softirq, c.steal,
            c.guest, c.guest_nice] == ticks
    assert c.ncpu == 3


@EXACT
@given(comm=st.binary(max_size=64), pid=st.integers(1, 2**31), ppid=st.integers(-(2**63), 2**63 - 1),
       utime=u64, starttime=u64, rss=st.integers(-(2**63), 2**63 - 1))
def test_pid_stat_numbers_and_any_comm_come_back_exactly(comm, pid, ppid, utime, starttime, rss):
    line = (b"%d (%s) R %d 7 7 0 -1 4194560 0 0 0 0 %d 5 0 0 20 0 1 0 %d 99 %d 1 2\n"
            % (pid, comm, ppid, utime, starttime, rss))
    s = r.parse_pid_stat(line)
    assert (s.pid, s.comm, s.state, s.ppid, s.pgrp, s.utime, s.stime, s.starttime, s.rss_pages) == \
        (pid, comm, "R", ppid, 7, utime, 5, starttime, rss)


@EXACT
@given(st.lists(u64, min_size=7, max_size=7))
def test_pid_io_numbers_come_back_exactly(values):
    io_ = r.parse_pid_io(TEMPLATES["pid_io"][1].format(*values).encode())
    assert [io_.rchar, io_.wchar, io_.syscr, io_.syscw, io_.read_bytes, io_.write_bytes,
            io_.cancelled_write_bytes] == values


@EXACT
@given(uid=st.integers(0, 2**32 - 1), euid=st.integers(0, 2**32 - 1), rss=kib, pte=kib, swap=kib,
       threads=st.integers(1, 2**31))
def test_pid_status_numbers_come_back_exactly(uid, euid, rss, pte, swap, threads):
    text = TEMPLATES["pid_status"][1].format(uid, euid, euid, euid, rss, pte, swap, threads)
    s = r.parse_pid_status(text.encode())
    assert (s.uid, s.euid, s.vm_rss, s.vm_pte, s.vm_swap, s.threads) == \
        (uid, euid, rss * 1024, pte * 1024, swap * 1024, threads)


path_bytes = st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b)


def octal_escaped(raw: bytes) -> bytes:
    """What the kernel writes for a path: space, tab, newline and backslash as \\ooo."""
    return b"".join(b"\\%03o" % byte if byte in b" \t\n\\" else bytes([byte]) for byte in raw)


@EXACT
@given(name=path_bytes, ids=st.lists(st.integers(0, U64), min_size=4, max_size=4))
def test_mountinfo_any_path_comes_back_exactly(name, ids):
    line = (b"%d %d %d:%d / /mnt/%s rw - ext4 /dev/x rw\n"
            % (ids[0], ids[1], ids[2], ids[3], octal_escaped(name)))
    (m,) = r.parse_mountinfo(line)
    assert (m.mount_id, m.parent_id, m.major, m.minor) == tuple(ids)
    assert os.fsencode(m.mount_point) == b"/mnt/" + name


# ---------------------------------------------------------------- the C under sanitizers

@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc with libasan/libubsan")
def test_the_c_parsers_survive_100000_mutated_inputs_under_asan_and_ubsan():
    """bench/asan.sh: a C harness over procparse.h, every input in a buffer of
    exactly its size; one overread, leak or undefined operation fails it."""
    done = subprocess.run(["bash", str(REPO / "bench" / "asan.sh"), "100000"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no report" in done.stdout


# ---------------------------------------------------------------- records through the real kernel log

needs_kmsg = pytest.mark.skipif(not os.access("/dev/kmsg", os.R_OK | os.W_OK),
                                reason="needs a readable and writable /dev/kmsg (root)")


def hostile_names(count: int, seed: int = 4242) -> list[bytes]:
    """Names a process could give itself: any bytes (comm is 15), and
    command lines or paths (longer), with the characters that split or forge."""
    rng = random.Random(seed)
    alphabet = b' =")(\\\n\r\t\x00\x1b\x7f\xff\xc3\xe2\x80\xaeevent=kill pid=1 <28>oorkiller[1]:'
    names = [b"evil\nevent=kill pid=1", b'a" pid="1', b"\\x41\\", b"\xff\xfe\xc3", b")", b" ",
             "\u202eevil\u2028".encode(), b"<28>oorkiller[1]: event=kill", b"x" * 2000]
    while len(names) < count:
        size = rng.choice([1, 15, 60, 300])
        names.append(bytes(rng.choice(alphabet) for _ in range(size)))
    return names


@needs_kmsg
def test_hostile_names_through_the_real_kernel_log_read_back_exactly_by_events_json():
    """Each hostile value written by the daemon's writer to the real /dev/kmsg
    comes back from `oorkiller events --json` as exactly one record with exactly
    the fields written (values cut with … only when they did not fit)."""
    run = f"f{uuid.uuid4().hex[:12]}"
    names = hostile_names(40)
    with RecordWriter(stderr=False) as writer:
        for index, name in enumerate(names):
            writer.emit("kill", "warning", resource="memory", run=run, index=index, name=name,
                        cmdline=name + b" --flag", pid=4242)
    out = subprocess.run([sys.executable, "-m", "oorkiller", "events", "--json", "--since", "300"],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    mine = [json.loads(line) for line in out.stdout.splitlines() if run.encode() in line]
    assert len(mine) == len(names), "one record per emit, none split, none lost"
    for record in mine:
        name = names[int(record["index"])]
        assert set(record) == {"time", "seq", "usec", "level", "program_pid", "event", "resource",
                               "run", "index", "name", "cmdline", "pid"}
        assert (record["event"], record["level"], record["pid"]) == ("kill", "warning", "4242")
        for key, written in (("name", name), ("cmdline", name + b" --flag")):
            expected = _json_shown(written.decode("utf-8", "surrogateescape"))
            if record[key] != expected:      # cut to fit 976 bytes: a prefix, then …
                assert record[key].endswith("…") and expected.startswith(record[key][:-1]), \
                    (key, written, record[key])


def _json_shown(text: str) -> str:
    """`events --json` shows bytes that are not UTF-8 the way events._json_safe does."""
    from oorkiller.cli.events import _json_safe
    return _json_safe(text)
