"""Sizes, durations, percents and rates read as operators write them."""

import pytest
from hypothesis import given, settings, strategies as st

from oorkiller.quantities import (
    Size, format_duration, format_size, parse_duration, parse_percent, parse_rate, parse_size,
)

FUZZ = settings(max_examples=300, deadline=None)


@pytest.mark.parametrize("text, nbytes", [
    ("512KiB", 512 * 1024),
    ("64MiB", 64 << 20),
    ("2GiB", 2 << 30),
    ("1TiB", 1 << 40),
    ("2GB", 2_000_000_000),
    ("1MB", 1_000_000),
    ("3KB", 3000),
    ("4096", 4096),
    (4096, 4096),  # YAML hands a plain number over as an int
    ("0.5KiB", 512),
    ("1.5GiB", 3 << 29),
    ("64 MiB", 64 << 20),
])
def test_sizes_in_bytes(text, nbytes):
    size = parse_size(text)
    assert size == Size(nbytes, False)
    assert size.resolve(123) == nbytes  # the total does not matter for bytes


@pytest.mark.parametrize("text, amount, resolved", [
    ("5%", 5, 50), ("2.5%", 2.5, 25), ("100%", 100, 1000), ("0%", 0, 0),
])
def test_sizes_in_percent_of_the_total(text, amount, resolved):
    size = parse_size(text)
    assert size == Size(amount, True)
    assert size.resolve(1000) == resolved


@pytest.mark.parametrize("text, message", [
    ("101%", "above 100%"),
    ("-5%", "negative"),
    ("-1MiB", "negative"),
    ("5XB", "unknown size unit"),
    ("1.5", "whole number of bytes"),
    ("", "not a size"),
    ("MiB", "not a size"),
    ("1e3", "not a size"),
    ("nan", "not a size"),
    ("\u0663MiB", "not a size"),  # an Arabic-Indic digit is not a number here
    (True, "expected a size"),
    (None, "expected a size"),
    ("9999999TiB", "too large"),
])
def test_bad_sizes_say_why(text, message):
    with pytest.raises(ValueError, match=message):
        parse_size(text)


@pytest.mark.parametrize("size, text", [
    (Size(5, True), "5%"), (Size(2.5, True), "2.5%"),
    (Size(64 << 20, False), "64MiB"), (Size(512 * 1024, False), "512KiB"),
    (Size(1000, False), "1000"),
])
def test_size_prints_as_written(size, text):
    assert str(size) == text


@FUZZ
@given(st.one_of(
    st.builds(Size, st.integers(0, 1 << 50).map(float), st.just(False)),
    st.builds(Size, st.integers(0, 1000).map(lambda tenths: tenths / 10), st.just(True)),
))
def test_size_text_round_trips(size):
    assert parse_size(str(size)) == size


@pytest.mark.parametrize("text, seconds", [
    ("250ms", 0.25), ("1s", 1), ("5m", 300), ("1h", 3600), ("1d", 86400),
    ("1m30s", 90), ("10", 10), (10, 10), (1.5, 1.5), ("0", 0), ("0ms", 0),
])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text, message", [
    ("-1s", "negative"), ("5 minutes", "not a duration"), ("1x", "not a duration"),
    ("s", "not a duration"), ("1s1", "not a duration"), ("", "not a duration"),
    (False, "expected a duration"), ("999999999d", "too long"),
])
def test_bad_durations_say_why(text, message):
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


@FUZZ
@given(st.integers(0, 10 * 86400 * 1000))
def test_duration_text_round_trips_to_the_millisecond(millis):
    seconds = millis / 1000
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=1e-9)


def test_durations_print_short():
    assert [format_duration(s) for s in (0.25, 1, 90, 3600, 1.5)] == ["250ms", "1s", "1m30s", "1h", "1.5s"]


@pytest.mark.parametrize("text, fraction", [("98%", 0.98), ("2.5%", 0.025), ("0%", 0), ("0", 0), ("100%", 1)])
def test_percent_is_a_fraction(text, fraction):
    assert parse_percent(text) == pytest.approx(fraction)


@pytest.mark.parametrize("text, message", [
    ("98", "needs a % sign"), ("0.98", "needs a % sign"), ("101%", "above 100%"), ("-1%", "negative"),
])
def test_bad_percents_say_why(text, message):
    with pytest.raises(ValueError, match=message):
        parse_percent(text)


@pytest.mark.parametrize("text, rate", [
    ("50MiB/s", 50 << 20), ("1GB/s", 10**9), ("4096", 4096), ("0", 0), ("1 MiB/s", 1 << 20),
])
def test_rates_in_bytes_per_second(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["5%/s", "fast", "-1MiB/s", "50MiB/h"])
def test_bad_rates(text):
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)


@pytest.mark.parametrize("nbytes, text", [
    (0, "0B"), (512, "512B"), (1024, "1KiB"), (int(3.1 * 2**30), "3.1GiB"),
    (64 << 20, "64MiB"), (1536, "1.5KiB"), (5 << 40, "5TiB"), (-2048, "-2KiB"),
])
def test_format_size_is_human(nbytes, text):
    assert format_size(nbytes) == text


@FUZZ
@given(st.text(max_size=20))
def test_parsers_only_ever_raise_value_error(text):
    for parse in (parse_size, parse_duration, parse_percent, parse_rate):
        try:
            parse(text)
        except ValueError:
            pass
