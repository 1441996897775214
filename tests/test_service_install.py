"""`oorkiller install-service` / `uninstall-service`, run as operators run them
(the installed console script), against temporary unit and config directories."""
import os
import shutil
import stat
import subprocess
import sys

import pytest

from oorkiller.config import default_config_text
from sandbox import oorkiller_command

MARKER = "# Written by `oorkiller install-service`"


def run(*args, program=None, **kw):
    argv = [*(program or oorkiller_command()), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/", **kw)


@pytest.fixture
def dirs(tmp_path):
    """(unit dir, config dir, the options naming them): neither exists yet."""
    unit_dir, config_dir = tmp_path / "system", tmp_path / "etc-oorkiller"
    return unit_dir, config_dir, ["--unit-dir", str(unit_dir), "--config-dir", str(config_dir)]


def exec_start_lines(text):
    return [line for line in text.splitlines() if line.startswith("ExecStart=")]


def test_a_dry_run_prints_the_unit_for_this_program_and_writes_nothing(dirs):
    unit_dir, config_dir, options = dirs
    out = run("install-service", "--dry-run", *options)
    assert out.returncode == 0, out.stderr
    program = oorkiller_command()[0]
    config = config_dir / "oorkiller.yaml"
    assert exec_start_lines(out.stdout) == [f"ExecStart={program} run -c {config}"]
    assert f"would write {unit_dir / 'oorkiller.service'}" in out.stdout
    assert f"would write {config}" in out.stdout and default_config_text() in out.stdout
    assert not unit_dir.exists() and not config_dir.exists()


def test_install_writes_the_unit_and_the_default_config_root_owned_0644(dirs):
    unit_dir, config_dir, options = dirs
    out = run("install-service", *options, umask=0o077)   # modes must not depend on the umask
    assert out.returncode == 0, out.stderr
    unit, config = unit_dir / "oorkiller.service", config_dir / "oorkiller.yaml"
    text = unit.read_text()
    assert text.startswith(MARKER)
    assert exec_start_lines(text) == [f"ExecStart={oorkiller_command()[0]} run -c {config}"]
    assert config.read_text() == default_config_text()
    for path, mode in ((unit, 0o644), (config, 0o644), (config_dir, 0o755)):
        info = os.stat(path)
        assert stat.S_IMODE(info.st_mode) == mode and info.st_uid == 0, path
    assert "systemd is not running" in out.stdout       # this machine's PID 1 is not systemd
    assert run("check-config", str(config)).returncode == 0


def test_an_existing_config_is_kept_byte_for_byte(dirs):
    unit_dir, config_dir, options = dirs
    config_dir.mkdir()
    config = config_dir / "oorkiller.yaml"
    mine = b"# the operator's own\nmemory:\n  available: {term: 9%, kill: 4%}\n"
    config.write_bytes(mine)
    os.chmod(config, 0o600)
    out = run("install-service", *options)
    assert out.returncode == 0, out.stderr
    assert config.read_bytes() == mine and stat.S_IMODE(os.stat(config).st_mode) == 0o600
    assert f"kept {config}" in out.stdout
    assert (unit_dir / "oorkiller.service").exists()


def test_uninstall_removes_the_unit_and_keeps_the_config(dirs):
    unit_dir, config_dir, options = dirs
    assert run("install-service", *options).returncode == 0
    out = run("uninstall-service", *options)
    assert out.returncode == 0, out.stderr
    assert not (unit_dir / "oorkiller.service").exists()
    config = config_dir / "oorkiller.yaml"
    assert config.read_text() == default_config_text()
    assert f"kept {config}" in out.stdout
    again = run("uninstall-service", *options)
    assert again.returncode == 0 and "nothing to remove" in again.stdout


def test_a_unit_not_written_by_install_service_is_neither_replaced_nor_removed(dirs):
    unit_dir, _, options = dirs
    unit_dir.mkdir()
    theirs = unit_dir / "oorkiller.service"
    theirs.write_text("[Service]\nExecStart=/opt/elsewhere/oorkiller run\n")   # an operator's own
    before = theirs.read_bytes()
    for command in ("install-service", "uninstall-service"):
        out = run(command, *options)
        assert out.returncode == 1 and "not written by install-service" in out.stderr, out
        assert "Traceback" not in out.stderr
        assert theirs.read_bytes() == before


def test_without_a_console_script_execstart_is_this_python_dash_m(dirs):
    _, config_dir, options = dirs
    out = run("install-service", "--dry-run", *options, program=[sys.executable, "-m", "oorkiller"])
    assert out.returncode == 0, out.stderr
    assert exec_start_lines(out.stdout) == [
        f"ExecStart={os.path.abspath(sys.executable)} -m oorkiller run -c {config_dir / 'oorkiller.yaml'}"]


def test_the_default_config_dir_needs_no_dash_c(tmp_path):
    """The daemon reads /etc/oorkiller/oorkiller.yaml by itself (and falls back
    to the embedded default when an operator removes it)."""
    out = run("install-service", "--dry-run", "--unit-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert exec_start_lines(out.stdout) == [f"ExecStart={oorkiller_command()[0]} run"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_systemd_accepts_the_written_unit_without_a_warning(dirs):
    unit_dir, _, options = dirs
    assert run("install-service", *options).returncode == 0
    result = subprocess.run(["systemd-analyze", "verify", str(unit_dir / "oorkiller.service")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
