"""A record is one logfmt line of at most 976 bytes that no value can
split or forge, and parse_record gives back exactly what was formatted."""
import signal

import pytest
from hypothesis import given, settings, strategies as st

from oorkiller.record.logfmt import (
    LEVELS, MAX_RECORD_BYTES, RESERVED_KEYS, RecordError, format_fields, format_human,
    format_record, parse_record, safe_key, value_bytes,
)

PID = 812


def text_part(record: bytes) -> str:
    """What the kernel stores: the record without its `<PRI>` prefix."""
    assert record.startswith(b"<")
    return record[record.index(b">") + 1:].decode("utf-8", "surrogateescape")


def round_trip(fields, event="test"):
    record = format_record(event, fields, pid=PID, level="info")
    return record, parse_record(text_part(record))


def expected(value) -> str:
    return value_bytes(value).decode("utf-8", "surrogateescape")


def assert_one_line(record: bytes):
    assert record.endswith(b"\n")
    assert record.count(b"\n") == 1
    assert b"\r" not in record and b"\x00" not in record
    assert len(record) <= MAX_RECORD_BYTES


# ---- the line format

def test_spec_example_record():
    record = format_record("kill", {
        "resource": "memory", "pid": 4242, "name": "hog", "user": 1000,
        "signal": "SIGKILL", "score": 1312, "rss": "3.1GiB",
        "reason": "MemAvailable 4.8% < kill level 5%", "dry_run": False,
    }, pid=PID, level="warning")
    assert record == (
        b"<28>oorkiller[812]: event=kill resource=memory pid=4242 name=hog "
        b"user=1000 signal=SIGKILL score=1312 rss=3.1GiB "
        b'reason="MemAvailable 4.8% < kill level 5%" dry_run=no\n')


@pytest.mark.parametrize("level, pri", [("warning", b"<28>"), ("err", b"<27>"), ("info", b"<30>")])
def test_pri_is_facility_daemon_plus_level(level, pri):
    assert format_record("start", {}, pid=PID, level=level).startswith(pri + b"oorkiller[812]: event=start")
    assert int(pri[1:-1]) == 3 * 8 + LEVELS[level]


def test_value_types():
    record, parsed = round_trip({
        "flag": True, "off": False, "count": 7, "ratio": 0.048, "whole": 1312.0,
        "big": 1e20, "skipped": None, "signal": signal.SIGKILL, "empty": "",
    })
    assert "skipped" not in parsed
    assert parsed["flag"] == "yes" and parsed["off"] == "no"
    assert parsed["count"] == "7" and parsed["ratio"] == "0.048" and parsed["whole"] == "1312"
    assert parsed["big"] == "1e+20" and parsed["signal"] == "SIGKILL"
    assert parsed["empty"] == "" and b' empty=""' in record


def test_quoting_only_when_needed():
    record, _ = round_trip({"plain": "hog", "spaced": "a b", "equals": "a=b", "quote": 'a"b'})
    assert b" plain=hog " in record
    assert b' spaced="a b"' in record and b' equals="a=b"' in record
    assert b' quote="a\\"b"' in record


def test_bad_keys_and_levels_are_refused():
    for key in ("pid x", "a=b", "Name", "", "program_pid", "seq", "time", "event", "n\n"):
        with pytest.raises(RecordError):
            format_record("test", {key: 1}, pid=PID, level="info")
    with pytest.raises(RecordError):
        format_record("test", {}, pid=PID, level="loud")


def test_safe_key_repairs_what_format_record_refuses():
    assert safe_key("Cgroup-Version") == "cgroup_version"
    assert safe_key("seq") == "field_seq" and safe_key("2nd") == "field_2nd"
    assert safe_key("") == "_" and safe_key("pid") == "pid"
    for key in ("pid x", "a=b", "Name", "", "program_pid", "time", "n\n", "é"):
        assert parse_record(text_part(format_record("test", {safe_key(key): 1}, pid=PID, level="info")))


# ---- hostile values never split or forge a record

HOSTILE = [
    "line\nevent=kill pid=1",
    'quote" event=forged',
    "back\\slash\\",
    "a=b=c",
    "nul\x00byte",
    "tab\tcr\rbell\x07esc\x1b[31m",
    "del\x7f c1\x85\x9b",
    "bidi\u202eevil\u2028line\u2029para",
    b"\xff\xfe not utf-8 \xc3",
    b"\xe2\x82",                      # a cut UTF-8 sequence
    "é ü 日本 🐍",
    "\\x41 looks like an escape",
    ")",
    "   ",
    '"',
    "\\",
    "\\\"",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_value_round_trips_on_one_line(value):
    record, parsed = round_trip({"name": value, "resource": "memory"})
    assert_one_line(record)
    assert parsed["name"] == expected(value)
    assert parsed["event"] == "test" and parsed["resource"] == "memory"
    assert set(parsed) == {"program_pid", "event", "name", "resource"}


def test_escapes_are_readable():
    record, _ = round_trip({"name": b"a\nb\tc\\d\x00\xff"})
    assert b'name=a\\nb\\tc\\\\d\\x00\\xff' in record


def test_human_form_is_escaped_too():
    line = format_human("kill", {"resource": "memory", "name": "x\ny"})
    assert line == "oorkiller: kill resource=memory name=x\\ny"


# ---- the 976-byte cap

def test_long_names_are_cut_with_an_ellipsis():
    name = b"n" * 2048
    record, parsed = round_trip({"resource": "memory", "name": name, "pid": 4242})
    assert len(record) <= MAX_RECORD_BYTES
    assert parsed["name"].endswith("…") and parsed["name"].startswith("nnnn")
    assert parsed["pid"] == "4242" and parsed["resource"] == "memory"


def test_longest_value_is_cut_first():
    record, parsed = round_trip({"cmdline": "c" * 2000, "name": "n" * 300, "reason": "r" * 100})
    assert len(record) <= MAX_RECORD_BYTES
    assert parsed["reason"] == "r" * 100
    assert parsed["name"] == "n" * 300
    assert parsed["cmdline"].endswith("…")


def test_long_values_share_the_room_evenly():
    record, parsed = round_trip({"cmdline": "c" * 3000, "exe": "e" * 1500, "user": 0})
    assert MAX_RECORD_BYTES - 8 <= len(record) <= MAX_RECORD_BYTES  # no room wasted
    assert abs(len(parsed["cmdline"]) - len(parsed["exe"])) <= 1
    assert parsed["user"] == "0"


def test_cut_never_splits_an_escape_or_a_character():
    for value in ("€" * 700, b"\xff" * 700, "\n" * 700, '"' * 700, "a€\x01" * 300):
        record, parsed = round_trip({"name": value, "resource": "disk"})
        assert len(record) <= MAX_RECORD_BYTES
        kept = parsed["name"][:-1]
        assert parsed["name"].endswith("…")
        assert expected(value).startswith(kept)


def test_event_and_resource_are_never_cut():
    resource = "r" * 300
    record, parsed = round_trip({"resource": resource, "a": "x" * 900, "b": "y" * 900})
    assert len(record) <= MAX_RECORD_BYTES
    assert parsed["resource"] == resource and parsed["event"] == "test"


def test_too_many_fields_still_fit():
    fields = {f"field_{i}": "v" * 20 for i in range(200)}
    record, parsed = round_trip({"resource": "cpu", **fields})
    assert_one_line(record)
    assert parsed["resource"] == "cpu"


# ---- parse_record refuses what is not ours

@pytest.mark.parametrize("text", [
    "systemd[1]: event=kill",
    "oorkiller[x]: event=kill",
    "oorkiller[12]: resource=memory event=kill",
    "oorkiller[12]: event=kill broken",
    'oorkiller[12]: event=kill name="unterminated',
    "oorkiller[12]: event=kill pid=1 pid=2",
    "oorkiller[12]: event=kill program_pid=1",
    "",
])
def test_parse_refuses_foreign_or_broken_text(text):
    assert parse_record(text) is None


def test_format_fields_reprints_a_parsed_record():
    _, parsed = round_trip({"resource": "memory", "name": b"x y\xff"})
    assert format_fields(parsed) == 'event=test resource=memory name="x y\\xff"'


# ---- fuzz: any value, one line, exact round trip

keys = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True).filter(
    lambda key: key not in RESERVED_KEYS)
values = st.one_of(
    st.binary(max_size=300),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=200),
    st.integers(), st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, values, max_size=4))
def test_fuzz_round_trip_exact(fields):
    record, parsed = round_trip(fields)
    assert_one_line(record)
    assert parsed is not None
    assert parsed.pop("program_pid") == PID and parsed.pop("event") == "test"
    if len(record) < MAX_RECORD_BYTES - 8:  # nothing was cut
        assert parsed == {key: expected(value) for key, value in fields.items()}
    else:
        assert set(parsed) <= set(fields)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=100))
def test_fuzz_any_str_even_lone_surrogates_gives_one_line(value):
    record, parsed = round_trip({"name": value})
    assert_one_line(record)
    assert parsed["name"] == expected(value)
