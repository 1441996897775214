"""The IO shield, end to end: the installed oorkiller in a PID and mount
namespace, scoped to the test's own processes, against real synchronous
writers on an ext4 loop device of the test's own. Unit-level checks of the monitor's judgement follow."""
import os
import signal
import subprocess
import tempfile

import pytest

from sandbox import in_pid_namespace, stopped_cleanly

TERMED = -signal.SIGTERM
LOOP_CTL_REMOVE = 0x4C81


def actions(records, *events):
    return [r for r in records if r["event"] in events]


@pytest.fixture
def marker():
    """Where a scenario writes its loop device number; if the scenario died
    before removing the device, it is removed here."""
    fd, path = tempfile.mkstemp(prefix="oorkiller-io-loop-")
    os.close(fd)
    yield path
    with open(path) as f:
        index = f.read().strip()
    os.unlink(path)
    if index and os.path.exists(f"/sys/block/loop{index}"):
        import fcntl
        subprocess.run(["losetup", "-d", f"/dev/loop{index}"], capture_output=True)
        control = os.open("/dev/loop-control", os.O_RDWR)
        try:
            fcntl.ioctl(control, LOOP_CTL_REMOVE, int(index))
        except OSError:
            pass
        finally:
            os.close(control)


def test_a_synchronous_writer_saturating_the_disk_is_killed_and_a_light_writer_survives(marker):
    result = in_pid_namespace("scenarios_io", "sync_writer_beside_light_io", marker=marker)
    assert result["hog_died"], result
    assert result["ended"] == {"hog": TERMED, "light": "alive"}
    (term,) = actions(result["records"], "term")
    assert term["resource"] == "io" and term["name"] == "hog" and term["unit"] == "process"
    assert term["device"] == result["device"]
    assert float(term["share"].rstrip("%")) >= 25                # min_share reached
    assert int(term["iops"]) >= 2000 and "util" in term and term["await"].endswith("ms")
    assert term["reason"].startswith(f"{result['device']} iops") and "for 3s" in term["reason"]
    assert actions(result["records"], "kill", "error") == []
    (reclaimed,) = actions(result["records"], "reclaimed")
    assert reclaimed["name"] == "hog" and reclaimed["device"] == result["device"]
    stopped_cleanly(result)


def test_devices_star_finds_the_saturated_loop_device(marker):
    result = in_pid_namespace("scenarios_io", "sync_writer_beside_light_io", marker=marker, device="*")
    assert result["ended"]["hog"] == TERMED and result["ended"]["light"] == "alive"
    terms = actions(result["records"], "term")
    assert [t["device"] for t in terms] == [result["device"]]
    stopped_cleanly(result)


def test_a_saturation_shorter_than_for_triggers_nothing(marker):
    result = in_pid_namespace("scenarios_io", "short_saturation", marker=marker)
    assert result["ended"] == {"burst": 0}, "the burst ran to its own end"
    assert actions(result["records"], "term", "kill", "nothing-to-kill", "error") == []
    stopped_cleanly(result)


def test_a_device_that_disappears_while_watched_is_no_error(marker):
    result = in_pid_namespace("scenarios_io", "device_disappears", marker=marker)
    assert result["gone"], "the loop device really left /proc/diskstats"
    assert result["daemon_alive"]
    assert actions(result["records"], "error", "term", "kill") == []
    stopped_cleanly(result)


def test_dry_run_signals_nothing_and_records_everything(marker):
    result = in_pid_namespace("scenarios_io", "sync_writer_beside_light_io", marker=marker, dry_run=True)
    assert result["ended"] == {"hog": "alive", "light": "alive"}
    (term,) = actions(result["records"], "term")
    assert term["dry_run"] == "yes" and term["name"] == "hog" and term["device"] == result["device"]
    assert actions(result["records"], "kill", "reclaimed") == []
    stopped_cleanly(result)


# ------------------------------------------------------------------ the judgement, unit level
from oorkiller.proc import diskstats                                    # noqa: E402
from oorkiller.proc._proctable import ProcTable                         # noqa: E402
from oorkiller.config import load_config_text                       # noqa: E402
from oorkiller.shields import io                                   # noqa: E402
from oorkiller.shields.base import Context                         # noqa: E402
from oorkiller.judge.rules import RuleSet                                 # noqa: E402


def monitor(io_yaml: str) -> io.IoShield:
    config = load_config_text(f"io:\n{io_yaml}", "test.yaml")
    return io.IoShield(Context(config=config, rules=RuleSet(config)))


def reading(iops=0.0, util=0.0, await_ms=0.0):
    """loop3 over one second."""
    ios = int(iops)
    return diskstats.DeviceReading("loop3", 7, 3, 1.0, ios, ios * 4096, iops, util,
                                   await_ms if ios else 0.0)


def test_every_configured_level_must_hold_and_a_zero_level_is_not_checked():
    m = monitor("  enabled: true\n  devices: [{device: '*', iops: 1000, await: 5ms}]\n")
    levels = m.levels_for("loop3")
    assert m.conditions(levels, reading(iops=2000, await_ms=9))[0]
    assert not m.conditions(levels, reading(iops=2000, await_ms=1))[0]      # await too low
    assert not m.conditions(levels, reading(iops=500, await_ms=9))[0]       # iops too low
    holds, reason = m.conditions(levels, reading(iops=2000, util=0.01, await_ms=9))
    assert holds and reason == "loop3 iops 2000 >= 1000, await 9.0ms >= 5ms for 30s"
    m.close()


def test_a_named_entry_wins_over_star_and_unnamed_devices_are_unwatched_without_star():
    m = monitor("  enabled: true\n  devices: [{device: '*', iops: 10}, {device: loop3, iops: 99}]\n")
    assert m.levels_for("loop3").iops == 99 and m.levels_for("vda").iops == 10
    m.close()
    m = monitor("  enabled: true\n  devices: [{device: loop3, utilization: 50%}]\n")
    assert m.levels_for("vda") is None
    m.close()


def test_pressure_alone_holds_only_for_a_device_doing_io():
    m = monitor("  enabled: true\n  pressure: {full_avg10: 20}\n")
    levels = m.levels_for("loop3")
    m.psi = 35.0
    assert m.conditions(levels, reading(iops=50))[0]
    assert not m.conditions(levels, reading(iops=0))[0]
    m.psi = 5.0
    assert not m.conditions(levels, reading(iops=50))[0]
    m.close()


def test_status_has_one_row_per_watched_device_and_names_absent_ones():
    m = monitor("  enabled: true\n  devices: [{device: '*', iops: 10}, {device: sdz9, iops: 5}]\n")
    rows = m.status()
    assert rows and all(r["resource"] == "io" for r in rows)
    assert {"device", "iops", "util", "await", "state"} <= set(rows[0])
    assert rows[-1] == {"resource": "io", "device": "sdz9", "state": "absent"}
    m.close()


def test_a_process_with_a_file_open_on_the_device_is_attributed_to_it(tmp_path):
    here = os.stat(tmp_path).st_dev
    with ProcTable("/proc", self_pid=0) as table:
        table.refresh()
        me = table.get(os.getpid())
        with open(tmp_path / "held", "w"):
            assert io.has_open_file_on(table, me, {here})
        assert not io.has_open_file_on(table, me, {os.makedev(4095, 4095)})
        with open(tmp_path / "out", "w") as out:
            sleeper = subprocess.Popen(["sleep", "60"], stdout=out)
        table.refresh()
        gone = table.get(sleeper.pid)
        assert io.has_open_file_on(table, gone, {here})
        sleeper.kill()
        sleeper.wait()
        assert not io.has_open_file_on(table, gone, {here})     # a process gone: nothing


def test_cancelled_writes_are_not_counted_as_io():
    class P:
        io_read_bytes, io_write_bytes, io_cancelled = 100, 4096, 4096
    assert io.io_bytes(P()) == 100
