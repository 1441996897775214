"""Per-device readings (oorkiller.proc.diskstats) on canned /proc/diskstats texts and
a fake sysfs tree: the IOPS / utilization / await definitions, counters that
wrap, partitions folded into their disk, devices that come and go."""
import os

import pytest

from oorkiller.proc import diskstats
from oorkiller.proc._readers import parse_diskstats

#           maj min name   reads merged rsect rms  writes merged wsect wms inflight io_ms weighted
LINE = "{maj:4d} {min:7d} {name} {r} 0 {rs} {rms} {w} 0 {ws} {wms} 0 {io} {wt}\n"


def line(name, maj=8, mi=0, r=0, rs=0, rms=0, w=0, ws=0, wms=0, io=0, wt=0):
    return LINE.format(maj=maj, min=mi, name=name, r=r, rs=rs, rms=rms, w=w, ws=ws,
                       wms=wms, io=io, wt=wt)


def stats(*lines):
    return parse_diskstats("".join(lines).encode())


@pytest.fixture
def sys_root(tmp_path):
    """sda with partitions sda1, sda2; dm-0 stacked on sda2; vdb alone; loop3."""
    root = tmp_path / "sys"
    devices = root / "devices"

    def block(path, name, number, partition=False):
        directory = devices / path
        directory.mkdir(parents=True)
        (directory / "dev").write_text(number + "\n")
        (directory / "holders").mkdir()
        if partition:
            (directory / "partition").write_text("1\n")
        for link_dir in (root / "class" / "block", root / "dev" / "block"):
            link_dir.mkdir(parents=True, exist_ok=True)
        os.symlink(directory, root / "class" / "block" / name)
        os.symlink(directory, root / "dev" / "block" / number)
        return directory

    block("sda", "sda", "8:0")
    block("sda/sda1", "sda1", "8:1", partition=True)
    sda2 = block("sda/sda2", "sda2", "8:2", partition=True)
    block("dm-0", "dm-0", "253:0")
    os.symlink(devices / "dm-0", sda2 / "holders" / "dm-0")
    block("vdb", "vdb", "254:16")
    block("loop3", "loop3", "7:3")
    return str(root)


# ------------------------------------------------------------------ the definitions
def test_iops_utilization_and_await_follow_their_definitions():
    before = stats(line("sda", r=100, rs=800, rms=50, w=200, ws=1600, wms=250, io=1000))[0]
    after = stats(line("sda", r=400, rs=3200, rms=350, w=500, ws=4000, wms=550, io=1500))[0]
    reading = diskstats.reading_between(before, after, 2.0)
    assert reading.ios == 600                          # 300 reads + 300 writes completed
    assert reading.iops == 300.0                       # per second over 2 s
    assert reading.util == pytest.approx(0.25)         # 500 ms busy in 2000 ms
    assert reading.await_ms == pytest.approx(1.0)      # (300 + 300) ms over 600 IOs
    assert reading.bytes == (2400 + 2400) * 512


def test_an_idle_device_has_zero_await_not_a_division_error():
    same = stats(line("sda", r=5, w=5, io=10))[0]
    reading = diskstats.reading_between(same, same, 1.0)
    assert (reading.iops, reading.util, reading.await_ms) == (0.0, 0.0, 0.0)


def test_utilization_is_capped_at_the_whole_interval():
    reading = diskstats.reading_between(stats(line("sda", io=0))[0], stats(line("sda", io=1300))[0], 1.0)
    assert reading.util == 1.0


# ------------------------------------------------------------------ wraps and resets
def test_a_counter_that_wraps_skips_that_sample_for_that_device_only(sys_root):
    reader = diskstats.DiskStats(["*"], sys_root=sys_root, path="/dev/null")
    reader.update(stats(line("sda", w=4294967000, io=100), line("vdb", maj=254, mi=16, w=10, io=100)), 0.0)
    wrapped = reader.update(stats(line("sda", w=200, io=900), line("vdb", maj=254, mi=16, w=30, io=600)), 1.0)
    assert "sda" not in wrapped                        # negative Δ: no reading, no error
    assert wrapped["vdb"].iops == 20.0
    after = reader.update(stats(line("sda", w=700, io=1400), line("vdb", maj=254, mi=16, w=30, io=600)), 2.0)
    assert after["sda"].iops == 500.0                  # the wrapped values became the baseline


def test_a_device_recreated_under_the_same_name_starts_a_new_baseline(sys_root):
    reader = diskstats.DiskStats(["loop3"], sys_root=sys_root, path="/dev/null")
    reader.update(stats(line("loop3", maj=7, mi=3, w=10)), 0.0)
    assert reader.update(stats(line("loop3", maj=7, mi=9, w=5000)), 1.0) == {}


# ------------------------------------------------------------------ partitions
def test_star_watches_whole_disks_and_folds_partitions_into_them(sys_root):
    reader = diskstats.DiskStats(["*"], sys_root=sys_root, path="/dev/null")
    text = [line("sda", w=10), line("sda1", mi=1, w=4), line("sda2", mi=2, w=6),
            line("dm-0", maj=253, w=6), line("loop3", maj=7, mi=3)]
    reader.update(stats(*text), 0.0)
    assert sorted(reader.present()) == ["dm-0", "loop3", "sda"]


def test_a_partition_named_explicitly_is_watched_as_named(sys_root):
    reader = diskstats.DiskStats(["sda2"], sys_root=sys_root, path="/dev/null")
    reader.update(stats(line("sda", w=10), line("sda2", mi=2, w=6)), 0.0)
    assert list(reader.present()) == ["sda2"]


def test_files_on_a_partition_or_on_what_is_stacked_on_it_count_for_the_disk(sys_root):
    numbers = diskstats.device_numbers(sys_root, "sda", 8, 0)
    assert numbers == {os.makedev(8, 0), os.makedev(8, 1), os.makedev(8, 2), os.makedev(253, 0)}
    assert diskstats.device_numbers(sys_root, "vdb", 254, 16) == {os.makedev(254, 16)}


def test_a_partition_knows_its_disk(sys_root):
    assert diskstats.parent_disk(sys_root, 8, 2) == "sda"
    assert diskstats.is_partition(sys_root, "sda2") and not diskstats.is_partition(sys_root, "sda")


def test_a_device_sysfs_does_not_know_is_treated_as_a_whole_disk(sys_root):
    reader = diskstats.DiskStats(["*"], sys_root=sys_root, path="/dev/null")
    reader.update(stats(line("nvme9n1", maj=259, w=1)), 0.0)
    assert list(reader.present()) == ["nvme9n1"]
    assert diskstats.device_numbers(sys_root, "nvme9n1", 259, 0) == {os.makedev(259, 0)}


# ------------------------------------------------------------------ appear / disappear
def test_devices_appear_and_disappear_without_error(sys_root):
    reader = diskstats.DiskStats(["*"], sys_root=sys_root, path="/dev/null")
    reader.update(stats(line("sda", w=1)), 0.0)
    first = reader.update(stats(line("sda", w=2), line("loop3", maj=7, mi=3, w=50)), 1.0)
    assert list(first) == ["sda"] and reader.appeared == ["loop3"]   # first reading next time
    second = reader.update(stats(line("sda", w=3), line("loop3", maj=7, mi=3, w=90)), 2.0)
    assert second["loop3"].iops == 40.0
    third = reader.update(stats(line("sda", w=4)), 3.0)
    assert list(third) == ["sda"] and reader.disappeared == ["loop3"]
    again = reader.update(stats(line("sda", w=5), line("loop3", maj=7, mi=3, w=0)), 4.0)
    assert "loop3" not in again                                          # back: new baseline


def test_a_named_device_that_is_absent_gives_no_reading(sys_root):
    reader = diskstats.DiskStats(["sdz"], sys_root=sys_root, path="/dev/null")
    assert reader.update(stats(line("sda", w=1)), 0.0) == {}
    assert reader.present() == {}


def test_the_real_diskstats_reads_through_a_held_fd():
    reader = diskstats.DiskStats(["*"])
    reader.sample(0.0)
    readings = reader.sample(0.5)
    assert set(readings) <= set(reader.present())
    assert reader.present(), "this machine has at least one block device"
    reader.close()
