"""The configuration file: defaults, checks with line numbers, refusal of unsafe files."""

import dataclasses
import fnmatch
import os
import re
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from oorkiller.config import load as config_module
from oorkiller.config import (
    ACTION_EVENTS, RESOURCES, Config, ConfigError, CpuConfig, DaemonConfig, IoConfig, LogConfig,
    MemoryConfig, NetworkConfig, Problem, check_file, default_config, default_config_text,
    load_config, load_config_text,
)
from oorkiller.quantities import Size

REPO = Path(__file__).resolve().parent.parent
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def problems_of(text: str) -> list[tuple[int, str]]:
    """(line, message) of every problem the text has; fails if it has none."""
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "f.yaml")
    return [(p.line, p.message) for p in caught.value.problems]


def only_problem(text: str) -> tuple[int, str]:
    found = problems_of(text)
    assert len(found) == 1, found
    return found[0]


# ---------------------------------------------------------------- the embedded default


def test_the_embedded_default_loads():
    config = default_config()
    assert isinstance(config, Config)
    assert load_config_text(default_config_text()) == dataclasses.replace(config, source="<string>")


def test_the_embedded_default_is_the_source_trees_file_with_comments():
    text = default_config_text()
    assert text == (REPO / "config" / "oorkiller.yaml").read_text()
    assert text.count("#") > 50  # commented for operators


def test_the_embedded_default_is_a_safe_server_setting():
    config = default_config()
    assert config.dry_run is False and config.scope is None and config.hooks == ()
    memory = config.memory
    assert memory.enabled and memory.kill == "process" and memory.term_timeout == 5
    assert (memory.available.term, memory.available.kill) == (Size(10, True), Size(5, True))
    assert (memory.swap_free.term, memory.swap_free.kill) == (Size(10, True), Size(5, True))
    assert memory.pressure.full_avg10 == 0
    cpu = config.cpu
    assert cpu.enabled and cpu.usage == 0.98 and cpu.runnable_per_cpu == 4.0
    assert cpu.for_ == 60 and cpu.min_share == 0.25 and cpu.kill == "auto"
    assert config.io.enabled is False
    assert config.network.duplicate_mac.enabled and config.network.duplicate_mac.action == "alert"


def test_the_default_disk_cleans_only_rotated_open_vswitch_logs():
    (disk,) = default_config().disks
    assert disk.path == "/" and disk.writer_rate == 50 << 20
    assert (disk.free.clean, disk.free.kill) == (Size(10, True), Size(3, True))
    assert disk.until.free == Size(15, True)
    (rule,) = disk.cleanup
    assert (rule.path, rule.min_age, rule.recursive) == ("/var/log/openvswitch", 600, False)
    for rotated in ("ovs-vswitchd.log.1", "ovsdb-server.log.2.gz", "ovs-vswitchd.log.10"):
        assert fnmatch.fnmatchcase(rotated, rule.glob), rotated
    for live in ("ovs-vswitchd.log", "ovsdb-server.log", "other.txt"):
        assert not fnmatch.fnmatchcase(live, rule.glob), live


def test_the_default_rules_protect_the_services_and_avoid_vms():
    *protects, avoid = default_config().rules
    assert all(rule.protect for rule in protects)
    by_cgroup = [r.match.cgroup for r in protects if r.match.cgroup is not None]
    by_exe = [r.match for r in protects if r.match.exe is not None]
    for unit in ("init.scope", "system.slice/ssh.service", "system.slice/sshd.service",
                 "system.slice/systemd-journald.service", "system.slice/ovs-vswitchd.service",
                 "system.slice/ovsdb-server.service", "system.slice/libvirtd.service"):
        assert any(c.search("/" + unit) for c in by_cgroup), unit
    for unit in ("user.slice/user-1000.slice/session-1.scope", "system.slice/sshd-evil.service",
                 "user.slice/user-1000.slice/user@1000.service/system.slice/sshd.service"):
        assert not any(c.search("/" + unit) for c in by_cgroup), unit
    for exe in ("/usr/sbin/sshd", "/usr/sbin/ovs-vswitchd", "/usr/sbin/ovsdb-server",
                "/usr/sbin/libvirtd", "/usr/lib/systemd/systemd-journald"):
        assert any(m.exe.search(exe) and m.user == 0 for m in by_exe), exe
    assert all(m.user == 0 for m in by_exe)      # a user running the same binary is not root
    assert avoid.adjust == -200 and not avoid.protect
    assert avoid.match.cgroup.search("/machine.slice/machine-qemu\\x2d1.scope")


def test_code_defaults_equal_the_embedded_file():
    """A key left out takes the dataclass default: it must be what the default file says."""
    config = default_config()
    assert config.daemon == DaemonConfig()
    assert config.log == LogConfig()
    assert config.memory == MemoryConfig()
    assert config.cpu == CpuConfig()
    assert config.io == IoConfig()
    assert config.network == NetworkConfig()


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n", "null\n", "{}\n"])
def test_an_empty_file_means_all_defaults(text):
    assert load_config_text(text) == dataclasses.replace(default_config(), source="<string>")


def test_lists_left_out_come_from_the_default_but_an_empty_list_is_empty():
    tuned = load_config_text("memory: {interval: 2s}\n")
    assert tuned.memory.interval == 2 and tuned.rules == default_config().rules
    assert tuned.disks == default_config().disks
    bare = load_config_text("rules: []\ndisks: []\nhooks:\n")
    assert bare.rules == () and bare.disks == () and bare.hooks == ()


# ---------------------------------------------------------------- values


def test_values_are_converted_to_their_units():
    config = load_config_text("""
memory:
  available: {term: 2GiB, kill: 1GiB}
  pressure: {full_avg10: 20, for: 250ms}
cpu: {usage: 90%, runnable_per_cpu: 2, pressure: {some_avg10: 50.5}}
io:
  devices: [{device: nvme0n1, iops: 1000, utilization: 95%, await: 1s}]
disks:
  - path: /var/
    writer_rate: 1GB/s
    truncate_deleted: ['/var/log/*.log']
""")
    assert config.memory.available.term == Size(2 << 30, False)
    assert config.memory.pressure.full_avg10 == 20 and config.memory.pressure.for_ == 0.25
    assert config.cpu.usage == 0.9 and config.cpu.pressure.some_avg10 == 50.5
    (device,) = config.io.devices
    assert (device.device, device.iops, device.utilization, device.await_ms) == ("nvme0n1", 1000, 0.95, 1000)
    (disk,) = config.disks
    assert disk.path == "/var" and disk.writer_rate == 10**9 and disk.truncate_deleted == ("/var/log/*.log",)
    assert disk.line == 9 and disk.cleanup == ()


def test_rules_keep_their_line_and_resolve_user_names():
    config = load_config_text("""rules:
  - match: {user: root, cmdline: 'java .*'}
    adjust: 300
  - match: {user: 1000, descendant_of: 77, pid: 78, exe: '^/usr/', cgroup: x, name: y}
    protect: true
scope:
  descendant_of: 1234
""")
    first, second = config.rules
    assert first.line == 2 and first.match.user == 0 and first.adjust == 300
    assert first.match.cmdline.pattern == "java .*"
    assert second.match.user == 1000 and second.match.descendant_of == 77 and second.match.pid == 78
    assert config.scope.descendant_of == 1234 and config.scope.line == 7


def test_hook_defaults_and_values():
    config = load_config_text("""hooks:
  - command: [/usr/local/bin/notify, --kill]
  - command: [/bin/logger]
    events: [kill, reclaimed]
    resources: [memory]
    before_kill: true
    timeout: 500ms
""")
    plain, tuned = config.hooks
    assert plain.command == ("/usr/local/bin/notify", "--kill")
    assert plain.events == ACTION_EVENTS and plain.resources == RESOURCES
    assert plain.before_kill is False and plain.timeout == 2 and plain.line == 2
    assert tuned.events == {"kill", "reclaimed"} and tuned.resources == {"memory"}
    assert tuned.before_kill and tuned.timeout == 0.5


def all_keys(section=config_module._TOP, path=""):
    """Every dotted key the loader accepts, from its own tables."""
    for key, (_, convert) in section.keys.items():
        yield path + key
        if isinstance(convert, config_module._Section):
            yield from all_keys(convert, path + key + ".")


def test_the_reference_documents_every_key():
    reference = (REPO / "docs" / "configuration.md").read_text()
    def documented(key):
        name = re.escape(key.rsplit(".", 1)[-1])
        return re.search(rf"`[^`\n]*\b{name}\b[^`\n]*`", reference) is not None
    undocumented = [key for key in all_keys() if not documented(key)]
    assert undocumented == []
    assert len(list(all_keys())) > 50  # the walk did see the nested sections


def test_config_objects_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        default_config().memory.interval = 5


# ---------------------------------------------------------------- errors with their line


@pytest.mark.parametrize("text, line, message", [
    # unknown keys, duplicates, wrong types
    ("memory:\n  bogus: 1\n", 2, "memory.bogus: unknown key"),
    ("nonsense: true\n", 1, "nonsense: unknown key"),
    ("log:\n  level: info\n  level: debug\n", 3, "duplicate key (first given at line 2)"),
    ("dry_run: yes please\n", 1, "dry_run: expected true or false"),
    ("memory: 5\n", 1, "memory: expected a mapping"),
    ("rules: {match: {name: x}}\n", 1, "rules: expected a list"),
    ("daemon:\n  nice: [1]\n", 2, "daemon.nice: expected a single value"),
    ("daemon:\n  nice: -10.5\n", 2, "expected a whole number"),
    ("cpu:\n  runnable_per_cpu: high\n", 2, "cpu.runnable_per_cpu: expected a plain number"),
    ("1: true\n", 1, "a key must be a name"),
    ("- a\n- b\n", 1, "expected a mapping"),
    ("memory:\n  interval: !!binary aGVsbG8=\n", 2, "duration"),
    # impossible values
    ("memory:\n  available: {term: 5%, kill: 10%}\n", 2, "kill level 10% is above the term level 5%"),
    ("memory:\n  swap_free:\n    term: 1GiB\n    kill: 2GiB\n", 4, "kill level 2GiB is above the term level 1GiB"),
    ("memory:\n  available:\n    kill: 20%\n", 3, "kill level 20% is above the term level 10%"),
    ("disks:\n  - path: /\n    inodes_free: {clean: 1000, kill: 2000}\n", 3, "above the clean level"),
    ("disks:\n  - path: /\n    until: {free: 5%}\n", 3, "until.free: 5% is below the clean level 10%"),
    ("memory:\n  available: {term: 150%}\n", 2, "cannot be above 100%"),
    ("cpu:\n  min_share: 101%\n", 2, "cannot be above 100%"),
    ("memory:\n  available: {kill: -1GiB}\n", 2, "cannot be negative"),
    ("memory:\n  term_timeout: -5s\n", 2, "cannot be negative"),
    ("memory:\n  interval: 0\n", 2, "memory.interval: must be more than 0"),
    ("network:\n  duplicate_mac: {interval: 0ms}\n", 2, "must be more than 0"),
    ("memory:\n  pressure: {full_avg10: 101}\n", 2, "out of range 0..100"),
    ("rules:\n  - match: {name: x}\n    adjust: -1001\n", 3, "rules[0].adjust: -1001 is out of range -1000..1000"),
    ("rules:\n  - match: {name: x}\n", 2, "needs 'protect: true' or a non-zero 'adjust'"),
    ("rules:\n  - protect: true\n", 2, "'match' is required"),
    ("rules:\n  - match: {}\n    protect: true\n", 2, "an empty match would select every process"),
    ("rules:\n  - match: {pid: 0}\n    protect: true\n", 2, "out of range"),
    ("rules:\n  - match: {user: no-such-user-here}\n    protect: true\n", 2, "unknown user 'no-such-user-here'"),
    ("rules:\n  - match:\n      name: '[a-'\n    protect: true\n", 3, "bad regular expression '[a-': unterminated"),
    ("network:\n  duplicate_mac:\n    ignore: ['^lo$', '(']\n", 3, "ignore[1]: bad regular expression"),
    ("daemon:\n  oom_score_adj: 1001\n", 2, "out of range -1000..1000"),
    ("daemon:\n  nice: 20\n", 2, "out of range -20..19"),
    # cleanup paths
    ("disks:\n  - path: /\n    cleanup:\n      - {path: var/log, glob: '*'}\n", 4, "must be an absolute path"),
    ("disks:\n  - path: /\n    cleanup:\n      - {path: /, glob: '*'}\n", 4, "whole file system '/' is refused"),
    ("disks:\n  - path: /\n    cleanup:\n      - {path: //, glob: '*'}\n", 4, "is refused"),
    ("disks:\n  - path: /\n    cleanup:\n      - {path: /var/log/../../etc, glob: '*'}\n", 4, "must not contain '..'"),
    ("disks:\n  - path: /\n    cleanup:\n      - {path: /tmp, glob: 'a/*'}\n", 4, "glob of file names"),
    ("disks:\n  - path: /\n    cleanup:\n      - {path: /tmp}\n", 4, "'glob' is required"),
    ("disks:\n  - interval: 5s\n", 2, "disks[0]: 'path' is required"),
    ("disks:\n  - path: /\n  - path: /tmp\n  - path: //\n", 4, "'/' is already watched by the entry at line 2"),
    ("disks:\n  - path: /\n    truncate_deleted: ['*.log']\n", 3, "must be an absolute path"),
    ("disks:\n  - path: /\n    writer_rate: 5%\n", 3, "a rate cannot be a percentage"),
    # enums
    ("memory:\n  kill: everything\n", 2, "unknown value 'everything' (expected process | process_group | cgroup | auto)"),
    ("log:\n  level: verbose\n", 2, "expected debug | info | warning"),
    ("network:\n  duplicate_mac: {action: shutdown}\n", 2, "expected alert | down"),
    ("io:\n  devices: [{device: /dev/sda}]\n", 2, "kernel device name"),
    # hooks
    ("hooks:\n  - command: 'rm -rf /tmp/x'\n", 2, "not a shell string"),
    ("hooks:\n  - command: []\n", 2, "the command is empty"),
    ("hooks:\n  - command: [/bin/echo, 3]\n", 2, "command[1]: expected text"),
    ("hooks:\n  - command: [/bin/echo]\n    events: [explode]\n", 3, "unknown value 'explode'"),
    ("hooks:\n  - command: [/bin/echo]\n    resources: []\n", 3, "would never run the hook"),
    ("hooks:\n  - events: [kill]\n", 2, "'command' is required"),
    ("hooks:\n  - command: [/bin/echo]\n    timeout: 0s\n", 3, "must be more than 0"),
    # YAML syntax
    ("memory:\n  interval: [1s\ncpu: {}\n", 3, "YAML syntax error"),
    ("memory:\n\tinterval: 1s\n", 2, "YAML syntax error"),
    ("a: 1\n---\nb: 2\n", 2, "YAML syntax error"),
    ("memory: *nowhere\n", 1, "YAML syntax error"),
    ("dry_run: false\nlog: {level: \x07}\n", 2, "YAML syntax error"),
])
def test_every_problem_has_its_line(text, line, message):
    found_line, found_message = only_problem(text)
    assert message in found_message
    assert found_line == line


def test_all_problems_of_a_file_are_reported():
    found = problems_of("""memory:
  interval: 0
  kill: sometimes
cpu:
  usage: 98
bogus: 1
rules:
  - match: {name: '('}
    protect: true
""")
    assert [line for line, _ in found] == [2, 3, 5, 6, 8]


def test_a_bad_disk_entry_does_not_hide_a_duplicate_path():
    found = problems_of("disks:\n  - path: /\n    interval: 0\n  - path: /tmp\n  - path: /tmp\n")
    assert [line for line, _ in found] == [3, 5]


def test_the_error_text_is_file_line_message():
    with pytest.raises(ConfigError) as caught:
        load_config_text("memory:\n  interval: 0\n  bogus: 1\n", "/etc/oorkiller/oorkiller.yaml")
    lines = str(caught.value).splitlines()
    assert lines[0].startswith("/etc/oorkiller/oorkiller.yaml:2: memory.interval")
    assert lines[1].startswith("/etc/oorkiller/oorkiller.yaml:3: memory.bogus")
    assert str(Problem("f", 7, "m")) == "f:7: m"


def test_an_unexpected_failure_is_still_a_config_error(monkeypatch):
    def explode(*args):
        raise RuntimeError("boom")
    monkeypatch.setattr(config_module, "_TOP", explode)
    problem = only_problem("dry_run: false\n")
    assert problem[0] == 0 and "RuntimeError: boom" in problem[1]


def test_a_self_referencing_document_is_a_clean_error_not_a_hang():
    # Aliases are not expanded while checking, so this is checked like any list.
    found = problems_of("rules: &r [*r]\n")
    assert found and all(line == 1 for line, _ in found)


def test_a_deeply_nested_document_is_a_clean_error():
    assert only_problem("[" * 5000) == (0, "the document is nested too deeply")


# ---------------------------------------------------------------- fuzzing


KEYS = ["dry_run", "daemon", "log", "scope", "rules", "memory", "cpu", "disks", "io", "network",
        "hooks", "match", "name", "user", "protect", "adjust", "enabled", "interval", "available",
        "term", "kill", "path", "glob", "cleanup", "free", "until", "for", "await", "command", "x"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-2000, 2**40), st.floats(allow_nan=True),
    st.sampled_from(["5%", "150%", "1GiB", "-1s", "250ms", "(", "/", "auto", "root", "*", ""]),
    st.text(max_size=8),
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    ),
    max_leaves=25,
)


def load_or_config_error(text: str) -> None:
    try:
        assert isinstance(load_config_text(text, "fuzz.yaml"), Config)
    except ConfigError as err:
        assert err.problems and all(isinstance(p, Problem) and p.file == "fuzz.yaml" for p in err.problems)
        assert "cannot load:" not in str(err), str(err)  # no internal error got through


@FUZZ
@given(DOCUMENTS)
def test_random_yaml_documents_give_a_config_or_a_config_error(document):
    load_or_config_error(yaml.safe_dump(document))


@FUZZ
@given(st.dictionaries(st.sampled_from(["memory", "cpu", "io", "disks", "rules", "hooks", "network", "log"]),
                       DOCUMENTS, max_size=3))
def test_random_sections_give_a_config_or_a_config_error(document):
    load_or_config_error(yaml.safe_dump(document))


DEFAULT_LINES = default_config_text().splitlines(keepends=True)


@st.composite
def mutated_default(draw) -> str:
    lines = list(DEFAULT_LINES)
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(0, len(lines) - 1))
        how = draw(st.sampled_from(["delete", "duplicate", "swap", "edit", "insert"]))
        if how == "delete":
            del lines[index]
        elif how == "duplicate":
            lines.insert(index, lines[index])
        elif how == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[index], lines[other] = lines[other], lines[index]
        elif how == "edit" and lines[index]:
            at = draw(st.integers(0, len(lines[index]) - 1))
            char = draw(st.sampled_from(string.printable + "é\x00"))
            lines[index] = lines[index][:at] + char + lines[index][at + 1:]
        else:
            lines.insert(index, draw(st.text(max_size=30)) + "\n")
    return "".join(lines)


@FUZZ
@given(mutated_default())
def test_mutations_of_the_default_give_a_config_or_a_config_error(text):
    load_or_config_error(text)


# ---------------------------------------------------------------- files on disk


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "oorkiller.yaml"
    path.write_text("memory:\n  interval: 2s\n")
    path.chmod(0o644)
    os.chown(path, 0, 0)
    return path


def test_a_root_owned_file_loads(config_file):
    config = load_config(config_file)
    assert config.memory.interval == 2 and config.source == str(config_file)
    assert check_file(config_file) == []


def test_a_file_writable_by_others_is_refused(config_file):
    config_file.chmod(0o666)
    with pytest.raises(ConfigError, match=r"oorkiller.yaml:0: refused: writable by group or others \(mode 0666\)"):
        load_config(config_file)
    assert load_config(config_file, check_owner=False).memory.interval == 2


def test_a_file_writable_by_its_group_is_refused(config_file):
    config_file.chmod(0o664)
    assert "writable by group or others" in check_file(config_file)[0]


def test_a_file_not_owned_by_root_is_refused(config_file):
    os.chown(config_file, 1000, 1000)
    with pytest.raises(ConfigError, match="refused: owned by uid 1000, not root"):
        load_config(config_file)


def test_a_missing_file_is_a_clean_error(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert check_file(missing) == [f"{missing}:0: cannot open: No such file or directory"]


def test_a_directory_is_not_a_configuration(tmp_path):
    os.chmod(tmp_path, 0o755)
    assert "not a regular file" in check_file(tmp_path)[0]


def test_a_file_that_is_not_utf8_names_the_line(config_file):
    config_file.write_bytes(b"dry_run: false\nlog: {level: \xff}\n")
    assert check_file(config_file) == [f"{config_file}:2: not UTF-8 text"]


def test_check_file_lists_every_problem_as_file_line_message(config_file):
    config_file.write_text("memory:\n  interval: 0\ncpu:\n  kill: all\n")
    found = check_file(config_file)
    assert len(found) == 2
    assert found[0].startswith(f"{config_file}:2: ") and found[1].startswith(f"{config_file}:4: ")


def test_the_default_text_checks_clean(config_file):
    config_file.write_text(default_config_text())
    assert check_file(config_file) == []
    assert load_config(config_file).rules == default_config().rules


def test_an_enabled_io_shield_without_any_level_is_refused():
    with pytest.raises(ConfigError) as err:
        load_config_text("io:\n  enabled: true\n", "f.yaml")
    assert "f.yaml:2: io: enabled but no level is set" in str(err.value)
    load_config_text("io:\n  enabled: true\n  pressure: {full_avg10: 20}\n", "f.yaml")
