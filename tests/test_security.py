"""A root daemon that acts on other people's processes and files: what an
unprivileged user can and cannot make it do (docs/reliability.md has the
threat model).

Who can influence the daemon: any user names processes, command lines and
cgroups; whoever may write in a cleanup directory places files there; whoever
may write the configuration (or a directory above it) decides what is killed.
These tests try each door. Already covered elsewhere and not repeated here:
the config file's own owner and mode (test_config), an untrusted cleanup
directory and a world-writable ancestor (test_cleanup), a directory swapped
for a link mid-pass (test_cleanup), hooks' clean environment (test_hooks),
the unit's capability list (test_service_unit).
"""
import json
import os
import subprocess
import sys
import textwrap
import time
import types

import pytest

from oorkiller.act import cleanup
from oorkiller.config import CleanupRule, ConfigError, load_config, load_config_text

from sandbox import in_pid_namespace, run_in_scratch

HOUR = 3600
CONFIG = "memory: {enabled: false}\n"


def make(path, size=4096, age=2 * HOUR):
    with open(path, "wb") as f:
        f.write(b"x" * size)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def rule(path, glob="*.log.*", recursive=False):
    return CleanupRule(path=str(path), glob=glob, min_age=600, recursive=recursive)


def never_enough():
    return types.SimpleNamespace(f_bavail=0, f_frsize=4096, f_favail=0, f_files=1000)


def run_pass(rules, device_of):
    goal = cleanup.Goal(never_enough, 1 << 60, None)
    return cleanup.run_pass(rules, os.stat(device_of).st_dev, goal)


# ---------------------------------------------------------------- the configuration

def write_config(path):
    path.write_text(CONFIG)
    os.chown(path, 0, 0)
    os.chmod(path, 0o644)
    return path


@pytest.mark.parametrize("owner,group,mode,why", [
    (1000, 0, 0o755, "owned by uid 1000"),
    (0, 1000, 0o775, "writable by group 1000"),
    (0, 0, 0o777, "writable by everyone"),
])
def test_a_config_in_a_directory_another_user_may_write_is_refused(tmp_path, owner, group, mode, why):
    """Whoever can write the directory can swap the file for a link to any
    root-owned file, or rename it away: the file is only as safe as its directory."""
    shared = tmp_path / "shared"
    shared.mkdir()
    config = write_config(shared / "oorkiller.yaml")
    os.chown(shared, owner, group)
    os.chmod(shared, mode)
    with pytest.raises(ConfigError, match=why):
        load_config(config)


def test_a_config_reached_through_a_link_in_a_user_directory_is_refused(tmp_path):
    """/home/user/link -> /etc-like root directory: the user can re-point the link."""
    trusted = tmp_path / "etc"
    trusted.mkdir(mode=0o755)
    write_config(trusted / "oorkiller.yaml")
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, 1000, 1000)
    os.symlink(trusted, home / "link")
    with pytest.raises(ConfigError, match="owned by uid 1000"):
        load_config(home / "link" / "oorkiller.yaml")
    assert load_config(trusted / "oorkiller.yaml")       # the real place is fine


def test_a_config_in_a_root_directory_under_sticky_tmp_loads(tmp_path):
    """Like /etc under /: root-owned, not writable by others; /tmp's sticky bit is fine."""
    assert load_config(write_config(tmp_path / "oorkiller.yaml"))


def test_the_installed_command_refuses_it_too_with_file_line_message(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    config = write_config(shared / "oorkiller.yaml")
    os.chmod(shared, 0o777)
    done = subprocess.run([sys.executable, "-m", "oorkiller", "check-config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith(f"{config}:") and "Traceback" not in done.stderr


# ---------------------------------------------------------------- cleanup directories

def test_a_cleanup_directory_under_a_group_writable_ancestor_is_refused(tmp_path):
    parent = tmp_path / "team"
    (parent / "logs").mkdir(parents=True)
    make(parent / "logs" / "a.log.1")
    os.chown(parent, 0, 1000)
    os.chmod(parent, 0o775)
    result = run_pass([rule(parent / "logs")], tmp_path)
    assert result.files == 0 and os.path.exists(parent / "logs" / "a.log.1")
    assert "writable by group 1000" in result.refused[0][1]


def test_a_cleanup_directory_under_a_symlinked_ancestor_is_refused(tmp_path):
    """Config `/srv/link/logs` where link -> elsewhere: never followed, even by root's links."""
    real = tmp_path / "real"
    (real / "logs").mkdir(parents=True)
    make(real / "logs" / "a.log.1")
    os.symlink(real, tmp_path / "link")
    result = run_pass([rule(tmp_path / "link" / "logs")], tmp_path)
    assert result.files == 0 and os.path.exists(real / "logs" / "a.log.1")
    assert "symbolic link" in result.refused[0][1]


def test_a_cleanup_directory_owned_by_a_user_deep_below_is_not_entered(tmp_path):
    logs = tmp_path / "logs"
    (logs / "user").mkdir(parents=True)
    make(logs / "user" / "a.log.1")
    os.chown(logs / "user", 1000, 1000)
    result = run_pass([rule(logs, recursive=True)], tmp_path)
    assert result.files == 0 and os.path.exists(logs / "user" / "a.log.1")
    assert result.refused == [(f"{logs}/user", "owned by uid 1000, not root")]


@pytest.mark.parametrize("path", ["/var/log/../../etc", "/srv/logs/..", "../etc", "relative/logs", "/"])
def test_a_cleanup_path_that_could_leave_its_directory_is_a_config_error(path):
    text = f"disks:\n  - path: /\n    cleanup:\n      - {{path: '{path}', glob: '*'}}\n"
    with pytest.raises(ConfigError) as err:
        load_config_text(text, "c.yaml")
    assert str(err.value).startswith("c.yaml:4:")


@pytest.mark.parametrize("glob", ["../*", "*/../*", "sub/*.log"])
def test_a_glob_with_a_slash_is_a_config_error(glob):
    text = f"disks:\n  - path: /\n    cleanup:\n      - {{path: /var/log, glob: '{glob}'}}\n"
    with pytest.raises(ConfigError, match="c.yaml:4"):
        load_config_text(text, "c.yaml")


def test_a_hard_link_to_an_outside_file_loses_only_its_name_in_the_cleanup_directory(tmp_path):
    """The kernel sees the link as a file of the directory: deleting it removes
    that one name; the outside file, its name and its content survive."""
    logs = tmp_path / "logs"
    logs.mkdir()
    outside = make(tmp_path / "precious.db", size=8192)
    os.link(outside, logs / "app.log.1")
    result = run_pass([rule(logs)], tmp_path)
    assert result.files == 1 and not os.path.exists(logs / "app.log.1")
    assert os.path.exists(outside) and os.path.getsize(outside) == 8192
    assert os.stat(outside).st_nlink == 1


def in_mount_namespace(code: str) -> dict:
    """Run Python `code` (which sets `result`) in a private mount namespace."""
    script = "import json, os, subprocess, sys\n" + textwrap.dedent(code) + "\nprint(json.dumps(result))\n"
    done = run_in_scratch(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", script],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


BIND_MOUNT = """
import tempfile, time
from oorkiller.act import cleanup
from oorkiller.config import CleanupRule
import types
base = tempfile.mkdtemp(prefix="oorkiller-sec-")
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=755", "tmpfs", base], check=True)
other = tempfile.mkdtemp(prefix="oorkiller-sec-other-")
try:
    logs, elsewhere = f"{base}/logs", f"{SOURCE}"
    os.makedirs(f"{logs}/sub")
    os.makedirs(elsewhere, exist_ok=True)
    if {TMPFS_OTHER}:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=755", "tmpfs", elsewhere], check=True)
    then = time.time() - 7200
    for path in (f"{elsewhere}/victim.log.1", f"{logs}/own.log.1"):
        with open(path, "wb") as f:
            f.write(b"x" * 4096)
        os.utime(path, (then, then))
    subprocess.run(["mount", "--bind", elsewhere, f"{logs}/sub"], check=True)
    goal = cleanup.Goal(lambda: types.SimpleNamespace(f_bavail=0, f_frsize=4096, f_favail=0, f_files=10),
                        1 << 60, None)
    rules = [CleanupRule(path=logs, glob="*.log.*", min_age=600, recursive=True)]
    passed = cleanup.run_pass(rules, os.stat(base).st_dev, goal)
    result = {"files": passed.files, "outside_survives": os.path.exists(f"{elsewhere}/victim.log.1"),
              "own_deleted": not os.path.exists(f"{logs}/own.log.1")}
finally:
    subprocess.run(["umount", "-R", base], check=False)
    subprocess.run(["umount", "-R", other], check=False)
"""


def test_a_bind_mount_of_another_file_system_inside_a_cleanup_directory_is_not_crossed():
    result = in_mount_namespace(BIND_MOUNT.replace("{SOURCE}", "{other}/fs").replace("{TMPFS_OTHER}", "True"))
    assert result == {"files": 1, "outside_survives": True, "own_deleted": True}


def test_a_bind_mount_of_the_same_file_system_inside_a_cleanup_directory_is_not_crossed():
    """A directory of the same file system bound into the cleanup directory has
    the same st_dev: only the mount point tells that it leads elsewhere."""
    result = in_mount_namespace(BIND_MOUNT.replace("{SOURCE}", "{base}/elsewhere").replace("{TMPFS_OTHER}", "False"))
    assert result == {"files": 1, "outside_survives": True, "own_deleted": True}


# ---------------------------------------------------------------- hostile process names

def test_a_process_named_like_a_record_cannot_forge_or_split_one():
    """A hog names itself `x\\nevent=kill pid=1`-like bytes: the daemon's kill
    record carries exactly that name, escaped, on one line, and no other record
    appears (scenario in scenarios_faults.py)."""
    result = in_pid_namespace("scenarios_faults", "hostile_named_hog", timeout=90)
    assert result["hog_died"], result
    signalled = [r for r in result["records"] if r["event"] in ("term", "kill")]
    assert signalled and all(r["name"] == result["comm"] for r in signalled), (signalled, result["comm"])
    # (nothing-to-kill: another test's hog on this shared machine may keep memory short)
    assert {r["event"] for r in result["records"]} <= {"term", "kill", "reclaimed", "stop", "nothing-to-kill"}
    assert all(r["pid"] == str(result["hog_pid"]) for r in signalled)
    assert result["lines_not_records"] == [], "every stderr line parses as exactly one record"


# ---------------------------------------------------------------- protection nobody can forge

def check_config(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oorkiller", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("match", ["{name: '^sshd$'}", "{cmdline: 'sshd -D'}",
                                   "{name: '^sshd$', cmdline: '-D'}"])
def test_a_protect_rule_resting_on_a_name_is_valid_but_warned_about(tmp_path, match):
    config = tmp_path / "oorkiller.yaml"
    config.write_text(f"rules:\n  - match: {match}\n    protect: true\n")
    os.chmod(config, 0o644)
    done = check_config(config)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith(f"{config}:2: warning: ")
    assert "any user can take that name" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == f"{config}: ok\n"


@pytest.mark.parametrize("match", ["{name: '^sshd$', user: root}", "{exe: '^/usr/sbin/sshd$', user: root}",
                                   "{cgroup: '^/system\\.slice/sshd\\.service$'}",
                                   "{name: '^sshd$', descendant_of: 1}"])
def test_a_protect_rule_with_an_unforgeable_key_is_not_warned_about(tmp_path, match):
    config = tmp_path / "oorkiller.yaml"
    config.write_text(f"rules:\n  - match: {match}\n    protect: true\n  - match: {{name: x}}\n    adjust: 10\n")
    os.chmod(config, 0o644)
    done = check_config(config)
    assert (done.returncode, done.stderr) == (0, "")


def test_a_bad_config_still_exits_2_with_its_problem(tmp_path):
    config = tmp_path / "oorkiller.yaml"
    config.write_text("rules:\n  - match: {name: '('}\n    protect: true\n")
    os.chmod(config, 0o644)
    done = check_config(config)
    assert done.returncode == 2 and done.stderr.startswith(f"{config}:2:") and "warning" not in done.stderr


def test_the_embedded_default_protects_by_nothing_a_user_can_forge():
    from oorkiller.config import config_warnings, default_config
    rules = [r for r in default_config().rules if r.protect]
    assert rules and config_warnings(default_config()) == []
    assert all(r.match.name is None and r.match.cmdline is None for r in rules)


class FakeTable:
    """The reads judge/rules.py makes, from given file contents."""
    def __init__(self, cgroup=b"", exe=b""):
        self.cgroup, self.exe = cgroup, exe

    def read_cgroup(self, proc):
        return self.cgroup

    def read_exe(self, proc):
        return self.exe

    def read_cmdline(self, proc):
        return b""

    def read_oom_score_adj(self, proc):
        return 0

    def get(self, pid):
        return None


def judge_default(cgroup=b"", exe=b"", uid=0, comm=b"sshd"):
    from oorkiller.config import default_config
    from oorkiller.judge.rules import RuleSet
    proc = types.SimpleNamespace(pid=4242, ppid=1, uid=uid, comm=comm, kthread=False)
    return RuleSet(default_config(), self_pid=1).judge(proc, FakeTable(cgroup, exe))


SSHD_CGROUPS = {
    # cgroup v2 only
    "unified": b"0::/system.slice/ssh.service\n",
    # v1 controllers plus systemd's v2 hierarchy without controllers
    "hybrid": b"4:memory:/system.slice/ssh.service\n3:cpuset:/\n1:name=systemd:/system.slice/ssh.service\n"
              b"0::/system.slice/ssh.service\n",
    # v1 only: the first line listed (cpuset) shows `/`; systemd's own hierarchy names the unit
    "legacy": b"12:cpuset:/\n4:memory:/system.slice/ssh.service\n1:name=systemd:/system.slice/ssh.service\n",
}


@pytest.mark.parametrize("layout", sorted(SSHD_CGROUPS))
def test_the_default_protects_a_service_by_its_cgroup_on_every_cgroup_layout(layout):
    verdict = judge_default(cgroup=SSHD_CGROUPS[layout], exe=b"/opt/other/sshd", uid=0)
    assert not verdict.eligible and "protected" in verdict.reason


@pytest.mark.parametrize("cgroup", [b"0::/user.slice/user-1000.slice/session-3.scope\n",
                                    b"0::/user.slice/user-1000.slice/user@1000.service/system.slice/ssh.service\n"])
def test_a_user_named_sshd_or_nesting_a_lookalike_cgroup_is_not_protected(cgroup):
    assert judge_default(cgroup=cgroup, exe=b"/usr/bin/python3.11", uid=1000).eligible
    # the real sshd binary, run by the user, is the user's and not protected either
    assert judge_default(cgroup=cgroup, exe=b"/usr/sbin/sshd", uid=1000).eligible
    assert not judge_default(cgroup=cgroup, exe=b"/usr/sbin/sshd", uid=0).eligible


def test_a_user_memory_hog_named_sshd_is_killed_under_the_default_rules():
    """The attack as a user runs it: `ln -s python ~/sshd; ~/sshd hog.py`."""
    result = in_pid_namespace("scenarios_security", "user_hog_named_sshd", timeout=120)
    assert result["ready"] and result["comm"] == "sshd", result
    assert result["hog_died"], result
    signalled = [r for r in result["records"] if r["event"] in ("term", "kill")]
    assert signalled and {r["pid"] for r in signalled} == {str(result["hog_pid"])}, signalled
    assert result["ended"]["bystander"] == "alive"


# ---------------------------------------------------------------- judged again at the signal

def test_a_process_that_execs_a_protected_program_after_it_was_seen_is_not_signalled():
    """First seen as `hog`, then exec'd into a program protected by its exe: the
    CPU shield chooses it by its first verdict; the engine's fresh judgement
    before the first signal refuses the kill and says which member refused it."""
    result = in_pid_namespace("scenarios_security", "exec_into_protected", timeout=120)
    assert result["ready"] and result["exe_after"] == result["guarded"], result
    assert result["refused"] is not None, [(r["event"], r.get("name"), r.get("reason")) for r in result["records"]]
    assert "kill refused" in result["refused"]["reason"] and "protected by rule" in result["refused"]["reason"]
    assert result["alive"] and result["ended"]["hog"] == "alive", result
    assert not [r for r in result["records"] if r["event"] in ("term", "kill")], result["records"]


def test_the_daemon_warns_once_at_start_about_a_name_only_protect_rule():
    result = in_pid_namespace("scenarios_security", "start_with_name_only_protect", timeout=60)
    warned = [line for line in result["lines"] if "any user can take that name" in line]
    assert len(warned) == 1 and warned[0].startswith(f"oorkiller: {result['config']}:"), result["lines"]
    assert result["stopped"]["rc"] == 0


def test_fresh_facts_refuse_a_pid_that_names_another_process_now():
    """The engine's facts are of the process its pidfd names, or of nobody."""
    from oorkiller.config import load_config_text
    from oorkiller.judge.rules import RuleSet
    from oorkiller.proc.facts import FreshFacts, judge_now
    from oorkiller.proc.targets import Target
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        assert wait_for_exec(sleeper.pid, b"sleep")
        now = FreshFacts().entry(sleeper.pid)
        rules = RuleSet(load_config_text("rules:\n  - match: {exe: '/sleep$'}\n    protect: true\n"))
        verdict = judge_now(rules, Target(sleeper.pid, b"sleep", now.starttime, -1))
        assert not verdict.eligible and "line 2" in verdict.reason
        assert judge_now(rules, Target(sleeper.pid, b"sleep", now.starttime + 1, -1)) is None
    finally:
        sleeper.kill()
        sleeper.wait()
    assert judge_now(rules, Target(sleeper.pid, b"sleep", now.starttime, -1)) is None


def wait_for_exec(pid, comm, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/comm", "rb") as f:
            if f.read().strip() == comm:
                return True
        time.sleep(0.01)
    return False


def test_a_holder_swapping_its_fd_for_a_root_file_never_gets_it_opened_for_writing():
    """Truncation opens only the judged deleted file for writing: an
    unprivileged holder (uid 65534) dup2-ing an O_PATH fd of a root-owned file
    onto the scanned fd number, in a tight loop, never gets root to open that
    file for writing, and its deleted log is still truncated round after round."""
    result = in_pid_namespace("scenarios_disk", "truncate_swap_attack", timeout=120)
    truncations = [r for r in result["records"] if r["event"] == "truncate"]
    assert len(truncations) >= 16 and {r["file"] for r in truncations} == {result["log"]}
    fields = dict(kv.split("=") for kv in result["report"].split())
    assert int(fields["swaps"]) > 100_000, "the attack must really have run"
    assert int(fields["truncated"]) >= 1, "the genuine deleted log must still be truncated"
    assert result["control_writes"] == 1, "the watch must see a write open"
    assert result["decoy_writes"] == 0, "root opened the swapped-in file for writing"
    assert result["decoy_same"] and result["decoy_text"] == "root's file"
    assert not [r for r in result["records"] if r["event"] == "error"]
