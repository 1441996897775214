"""The IO shield, end to end: the installed oorkiller in a PID and mount
namespace, scoped to the test's own processes, against real synchronous
writers on an ext4 loop device of the test's own (SPEC §1, §3 `io`, §4
records, §5). Unit-level checks of the monitor's judgement follow."""
import os
import signal
import subprocess
import tempfile

import pytest

from sandbox import in_pid_namespace

TERMED = -signal.SIGTERM
LOOP_CTL_REMOVE = 0x4C81


def actions(records, *events):
    return [r for r in records if r["event"] in events]


def stopped_cleanly(result):
    assert result["stopped"]["rc"] == 0
    assert result["stopped"]["stop_seconds"] < 1.0


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
