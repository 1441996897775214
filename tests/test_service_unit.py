"""config/oorkiller.service: systemd accepts it, and it says what operations
promise (notify + watchdog, restart always, never OOM-killed, the rights the
daemon needs and no more)."""
import configparser
import os
import shutil
import subprocess
import sys

import pytest

UNIT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config", "oorkiller.service")
INSTALLED_PATH = "/usr/local/bin/oorkiller"

# What the daemon does, and the capability each needs (docs/operations.md).
NEEDED_CAPABILITIES = {
    "CAP_KILL", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH", "CAP_DAC_OVERRIDE", "CAP_FOWNER",
    "CAP_SYS_RESOURCE", "CAP_IPC_LOCK", "CAP_SYS_NICE", "CAP_NET_ADMIN",
}
# Settings that would silently break the daemon (see the unit's comments).
FORBIDDEN = {
    "ProtectKernelLogs": "hides /dev/kmsg", "PrivateDevices": "hides /dev/kmsg",
    "ProtectClock": "closes /dev", "PrivateNetwork": "hides the host's interfaces",
    "ProtectProc": "hides other processes", "RestrictAddressFamilies": "hooks need the network",
    "User": "the daemon runs as root",
}


def unit_settings():
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str          # keys are case-sensitive in systemd
    parser.read(UNIT)
    return parser


def verify(path):
    return subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True)


def runnable_copy(tmp_path):
    """The unit with ExecStart pointing at the oorkiller installed here.

    `systemd-analyze verify` checks that ExecStart's program exists; on a
    development machine pip puts it next to the Python in use, not in
    /usr/local/bin. Nothing else changes.
    """
    exe = shutil.which("oorkiller") or os.path.join(os.path.dirname(sys.executable), "oorkiller")
    exe = os.path.realpath(exe)
    if not os.access(exe, os.X_OK):
        pytest.skip("oorkiller is not installed")
    text = open(UNIT).read()
    assert f"ExecStart={INSTALLED_PATH} run\n" in text
    copy = tmp_path / "oorkiller.service"
    copy.write_text(text.replace(f"ExecStart={INSTALLED_PATH} run", f"ExecStart={exe} run"))
    return str(copy)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_systemd_accepts_the_unit_without_a_single_warning(tmp_path):
    path = UNIT if os.access(INSTALLED_PATH, os.X_OK) else runnable_copy(tmp_path)
    result = verify(path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr   # unknown keys only warn: refuse them too


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_the_verification_would_catch_a_misspelt_key(tmp_path):
    """The check above is not toothless: a typo in a key is reported."""
    copy = runnable_copy(tmp_path)
    text = open(copy).read().replace("WatchdogSec=", "WatchdogSe=")
    open(copy, "w").write(text)
    assert "Unknown key" in verify(copy).stderr


def test_the_daemon_is_a_notify_service_with_a_watchdog_and_always_restarts():
    service = unit_settings()["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["WatchdogSec"] == "10s"
    assert service["ExecStart"] == f"{INSTALLED_PATH} run"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "always" and service["RestartSec"] == "1"
    assert unit_settings()["Unit"]["StartLimitIntervalSec"] == "0"


def test_the_kernel_oom_killer_never_picks_the_daemon_and_it_may_lock_its_memory():
    service = unit_settings()["Service"]
    assert service["OOMScoreAdjust"] == "-1000"
    assert service["LimitMEMLOCK"] == "infinity"
    assert service["LimitNOFILE"] == "1048576"


def test_the_daemon_keeps_exactly_the_capabilities_it_uses():
    granted = set(unit_settings()["Service"]["CapabilityBoundingSet"].split())
    assert granted == NEEDED_CAPABILITIES
    assert "CAP_SYS_ADMIN" not in granted


@pytest.mark.skipif(not shutil.which("capsh"), reason="needs capsh")
def test_every_capability_name_is_real():
    """systemd ignores an unknown capability name without a word: check each."""
    for name in unit_settings()["Service"]["CapabilityBoundingSet"].split():
        result = subprocess.run(["capsh", f"--supports={name.lower()}"], capture_output=True)
        assert result.returncode == 0, name


def test_the_file_system_is_read_only_except_the_cleanup_directories():
    service = unit_settings()["Service"]
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert "-/var/log/openvswitch" in service["ReadWritePaths"].split()
    assert service["ProtectHome"] == "read-only"
    assert service["PrivateTmp"] == "yes"


def test_no_setting_that_would_blind_or_disarm_the_daemon():
    service = unit_settings()["Service"]
    present = {key: why for key, why in FORBIDDEN.items() if key in service}
    assert present == {}


def test_the_unit_confines_devices_namespaces_system_calls_and_kernel_settings():
    service = unit_settings()["Service"]
    assert service["DevicePolicy"] == "closed" and service["DeviceAllow"] == "/dev/kmsg rw"
    for key in ("RestrictNamespaces", "ProtectKernelModules", "ProtectKernelTunables",
                "ProtectControlGroups"):
        assert service[key] == "yes", key
    assert service["SystemCallErrorNumber"] == "EPERM"     # never SIGSYS for the last defence
    assert service["MemoryMin"] == "64M"
    calls = service["SystemCallFilter"].split()
    assert calls[0] == "@system-service"
    assert {"pidfd_open", "pidfd_send_signal", "process_mrelease"} <= set(calls)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_every_system_call_the_filter_names_is_known_to_systemd():
    """A name systemd does not know makes the whole filter fail to load."""
    known = subprocess.run(["systemd-analyze", "syscall-filter", "@known"],
                           capture_output=True, text=True).stdout.split()
    for name in unit_settings()["Service"]["SystemCallFilter"].split():
        assert name.startswith("@") or name in known, name
