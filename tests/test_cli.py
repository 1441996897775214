"""The command line: exit codes, FILE:LINE errors, and the
operator's tools reading the real machine."""
import io
import json
import os
import re
import subprocess
import sys

import pytest

from oorkiller.config import default_config_text, load_config_text
from oorkiller.quantities import format_size
from sandbox import in_pid_namespace, oorkiller_command


def run(*args, **kw):
    return subprocess.run([*oorkiller_command(), *args], capture_output=True, text=True,
                          timeout=30, **kw)


@pytest.fixture
def config_file(tmp_path):
    def write(text, mode=0o644):
        path = tmp_path / "oorkiller.yaml"
        path.write_text(text)
        os.chmod(path, mode)
        return str(path)
    return write


def test_print_default_config_is_the_embedded_default_and_valid():
    out = run("print-default-config")
    assert out.returncode == 0
    assert out.stdout == default_config_text()
    assert "#" in out.stdout, "the default is commented for operators"
    load_config_text(out.stdout, "default")


def test_python_dash_m_is_the_same_program():
    out = subprocess.run([sys.executable, "-m", "oorkiller", "print-default-config"],
                         capture_output=True, text=True, cwd="/")
    assert out.returncode == 0 and out.stdout == default_config_text()


def test_check_config_accepts_a_valid_file(config_file):
    out = run("check-config", config_file("memory:\n  available: {term: 8%, kill: 4%}\n"))
    assert out.returncode == 0


@pytest.mark.parametrize("text,line", [
    ("memory:\n  enabled: true\n  intervall: 1s\n", 3),                       # unknown key
    ("cpu:\n  usage: lots\n", 2),                                              # wrong value
    ("memory:\n  available: {term: 5%, kill: 10%}\n", 2),                      # kill above term
    ("disks:\n  - path: /\n    cleanup:\n      - {path: relative/dir, glob: '*'}\n", 4),
    ("rules:\n  - match: {name: '(unclosed'}\n    protect: true\n", 2),         # bad regex
    ("memory: [1, 2\n", 2),                                                    # YAML syntax
])
def test_check_config_reports_file_line_and_exits_2(config_file, text, line):
    path = config_file(text)
    out = run("check-config", path)
    assert out.returncode == 2
    assert f"{path}:{line}: " in out.stderr
    assert "Traceback" not in out.stderr


def test_run_with_a_bad_file_exits_2_without_a_traceback(config_file):
    path = config_file("memory:\n  available: {term: 5%, kill: 10%}\n")
    out = run("run", "-c", path, "--dry-run")
    assert out.returncode == 2
    assert f"{path}:2: " in out.stderr and "Traceback" not in out.stderr


def test_a_file_writable_by_others_is_refused(config_file):
    path = config_file("dry_run: true\n", mode=0o666)
    out = run("check-config", path)
    assert out.returncode == 2 and f"{path}:" in out.stderr


def test_usage_errors_exit_2():
    assert run("candidates", "--resource", "gpu").returncode == 2
    assert run("no-such-command").returncode == 2


def test_candidates_and_status_show_the_ranking_and_the_exclusions():
    result = in_pid_namespace("scenarios_daemon", "candidates_json")
    assert result["rc"] == 0, result["stderr"]
    ranking = json.loads(result["json"])
    names = [row["name"] for row in ranking["ranked"]]
    assert names[:2] == ["biggest", "smaller"]
    assert "keepme" not in names
    top = ranking["ranked"][0]
    assert top["score"] == top["share"] + top["oom_score_adj"] + top["adjust"]
    reasons = {e["name"]: e["reason"] for e in ranking["excluded"]}
    assert reasons["keepme"].startswith("protected by rule")
    assert "biggest" in result["text"] and "excluded" in result["text"]
    # What it would choose now, and why: on a calm machine every kill is enough.
    choice = ranking["choice"]
    assert (choice["name"], choice["unit"]) == ("biggest", "process")
    assert choice["why"].startswith("alone enough") and choice["runner_up"].endswith("/smaller")
    assert f"would choose {choice['pid']} biggest (process): alone enough" in result["text"]
    assert result["status_rc"] == 0
    (memory,) = [r for r in json.loads(result["status"])["resources"] if r["resource"] == "memory"]
    assert memory["state"] == "ok" and 0 < memory["available"] <= memory["total"]


SIZE = r"-?\d+(\.\d)?(B|KiB|MiB|GiB|TiB|PiB)"


def test_status_shows_every_figure_in_its_unit_and_no_python_containers(config_file):
    """Status only reads: it runs on the real machine, on the embedded default."""
    path = config_file(run("print-default-config").stdout)
    text, raw = run("status", "-c", path), run("status", "-c", path, "--json")
    assert text.returncode == 0 and raw.returncode == 0, text.stderr + raw.stderr
    assert "{" not in text.stdout and "[" not in text.stdout, text.stdout
    lines = {line.split()[0]: line for line in text.stdout.splitlines()}
    figures = {resource: dict(part.split("=", 1) for part in line.split()[2:] if "=" in part)
               for resource, line in lines.items()}
    memory, disk, cpu = figures["memory"], figures["disk"], figures["cpu"]
    for key in ("available", "total", "term_level", "kill_level"):
        assert re.fullmatch(SIZE, memory[key]), (key, memory[key])
    assert re.fullmatch(r"\d+(\.\d+)?%", memory["available_pct"])
    for key in ("free", "total", "levels.clean", "levels.kill", "deleted_open_bytes"):
        assert re.fullmatch(SIZE, disk[key]), (key, disk[key])
    assert re.fullmatch(r"\d+", disk["levels.inodes_kill"])          # a count of inodes, not bytes
    assert cpu["for"].endswith("s") and cpu["min_share_pct"].endswith("%")
    # --json keeps the exact numbers: the total (which does not move) is the same figure
    exact = {r["resource"]: r for r in json.loads(raw.stdout)["resources"]}
    assert memory["total"] == format_size(exact["memory"]["total"])
    assert isinstance(exact["memory"]["total"], int) and isinstance(exact["disk"]["levels"], dict)


def test_status_rows_of_any_shape_are_flattened_and_humanised():
    from oorkiller.cli.display import print_status
    rows = [{"resource": "disk", "state": "ok", "levels": {"kill": 3 << 30, "inodes_kill": 5000},
             "cache_bytes": 1536, "held_for": 2.5, "mounts": ["/", "/var"],
             "writers": [{"pid": 7, "rate_bytes": 1 << 20}], "psi": None, "reason": "a b"},
            {"resource": "cpu", "state": "acting", "load_per_cpu_level": 4.0, "busy_pct": 99.5}]
    out = io.StringIO()
    print_status(rows, out)
    first, second = out.getvalue().splitlines()
    assert first.split()[2:] == ["levels.kill=3GiB", "levels.inodes_kill=5000", "cache_bytes=1.5KiB",
                                 "held_for=2.5s", "mounts=/,/var", "writers.0.pid=7",
                                 "writers.0.rate_bytes=1MiB", "psi=-", 'reason="a', 'b"']
    assert second.split()[2:] == ["load_per_cpu_level=4", "busy_pct=99.5%"]


# ---------------------------------------------------------------- hostile text
ESCAPES = ("\x1b", "\x07", "\x9b")


def test_candidates_print_a_process_named_with_terminal_escapes_escaped():
    result = in_pid_namespace("scenarios_security", "candidates_with_a_hostile_name")
    assert result["rc"] == 0 and "\x1b[" in result["comm"], result
    assert "x\\x1b[2J\\x1b]0;pwn\\x07y" in result["stdout"], result["stdout"]
    assert not any(ch in result["stdout"] for ch in ESCAPES)


def test_candidates_escape_cgroup_paths_and_reasons_too():
    """A cgroup's name is chosen by whoever created it (a user's delegated
    subtree); the CPU and IO rankings print it as the unit's group."""
    import io
    from oorkiller.cli.display import print_candidates
    out = io.StringIO()
    print_candidates({"resource": "cpu",
                      "ranked": [{"pid": 7, "name": b"a\x1b[31m", "unit": "cgroup",
                                  "group": "/user.slice/evil\x1b]0;t\x07\udcff", "share": 0.5}],
                      "excluded": [{"pid": 8, "name": b"b\x9b", "reason": "protected \x1b[1m"}],
                      "choice": {"pid": 7, "name": b"a\x1b[31m", "unit": "cgroup",
                                 "why": "alone enough \x1b[2J", "runner_up": "9/c\x1b[0m"}}, out)
    text = out.getvalue()
    assert not any(ch in text for ch in ESCAPES), repr(text)
    assert "/user.slice/evil\\x1b]0;t\\x07\\xff" in text and "a\\x1b[31m" in text


def test_the_modules_only_the_command_line_used_are_dropped_before_the_daemon_runs():
    code = ("import sys; from oorkiller import cli; cli.build_parser().parse_args(['run']); "
            "cli.forget_the_command_line(); "
            "print(sorted({'argparse', 'gettext', 'locale', 'oorkiller.cli.events'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_daemon_starts_without_what_only_the_command_line_needed(tmp_path):
    """argparse would ask shutil for the terminal's width, and shutil loads
    the bz2, lzma and zlib libraries; `oorkiller events --json` needs json:
    a daemon that locks its memory for months must not carry them."""
    import time
    import yaml
    from sandbox import base_config
    config = base_config(memory={"enabled": True})
    config["log"] = {"kmsg": False, "stderr": True, "level": "info"}
    path = tmp_path / "oorkiller.yaml"
    path.write_text(yaml.safe_dump(config))
    unshare = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
                                *oorkiller_command(), "run", "-c", str(path), "--dry-run"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert "start" in unshare.stderr.readline()
        time.sleep(0.5)
        with open(f"/proc/{unshare.pid}/task/{unshare.pid}/children") as f:
            [daemon] = f.read().split()
        with open(f"/proc/{daemon}/maps") as f:
            libraries = {line.split()[-1] for line in f if line.rstrip().endswith(".so") or ".so." in line}
        assert not [lib for lib in libraries if re.search(r"lib(lzma|bz2)|_(lzma|bz2|json)\.", lib)], libraries
        assert any("_calm" in lib for lib in libraries)          # the daemon's own are there
    finally:
        unshare.kill()
        unshare.wait(10)
