"""The wheel: `pip wheel` builds one from the source tree, it installs into a
fresh virtual environment with nothing but its dependencies' wheels (no
index), and the installed `oorkiller` works from there, native parts included.

Slow (about a minute): the native extensions are compiled from scratch. The
build uses --no-build-isolation (the test extra installs the build requirements) to
avoid fetching setuptools, Cython and cffi again; the isolated build
(`pip wheel --no-deps -w DIR .`) works as well, see docs/operations.md.
"""
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Build outputs of the development tree: the wheel must not need them.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.so",
                                    "*.c", ".pytest_cache", ".hypothesis", ".benchmarks", "bench",
                                    "default.yaml")


def run(*argv, timeout=300, **options):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd="/", **options)
    assert result.returncode == 0, f"{argv}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    """A directory holding the oorkiller wheel and its dependencies' wheels."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    shutil.copytree(SOURCE, source, ignore=NOT_SOURCE)   # never build in the shared checkout
    house = base / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
        "-w", str(house), str(source), timeout=600)
    fetched = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                              "-d", str(house), "PyYAML>=6.0", "cffi>=1.15"],
                             capture_output=True, text=True, timeout=300, cwd="/")
    if fetched.returncode != 0:
        pytest.skip(f"cannot fetch the dependencies' wheels (offline?): {fetched.stderr[-300:]}")
    return house


@pytest.fixture(scope="module")
def venv(wheelhouse, tmp_path_factory):
    env_dir = tmp_path_factory.mktemp("venv") / "env"
    run(sys.executable, "-m", "venv", str(env_dir))
    run(str(env_dir / "bin" / "pip"), "install", "-q", "--no-index", "--find-links", str(wheelhouse),
        "oorkiller")
    return env_dir


def test_pip_wheel_builds_one_platform_wheel(wheelhouse):
    [wheel] = [name for name in os.listdir(wheelhouse) if name.startswith("oorkiller-")]
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert wheel.endswith(f"-{tag}-{tag}-linux_x86_64.whl"), wheel


def test_the_wheel_installs_offline_and_runs_from_its_venv(venv, tmp_path):
    python, oorkiller = str(venv / "bin" / "python"), str(venv / "bin" / "oorkiller")
    where = run(python, "-c", "import oorkiller; print(oorkiller.__file__)").stdout.strip()
    assert where.startswith(str(venv)), where          # not the development tree
    config = tmp_path / "oorkiller.yaml"
    config.write_text("memory:\n  available: {term: 10%, kill: 5%}\n")
    os.chmod(config, 0o644)
    result = run(oorkiller, "check-config", str(config))
    assert result.stdout.strip() == f"{config}: ok"
    bad = tmp_path / "bad.yaml"
    bad.write_text("memory:\n  available: {term: 5%, kill: 10%}\n")
    os.chmod(bad, 0o644)
    refused = subprocess.run([oorkiller, "check-config", str(bad)], capture_output=True, text=True, cwd="/")
    assert refused.returncode == 2 and f"{bad}:2:" in refused.stderr


def test_the_installed_wheel_carries_its_native_parts_and_default_config(venv):
    python = str(venv / "bin" / "python")
    run(python, "-c", "import oorkiller.proc._readers, oorkiller.proc._proctable, oorkiller._kernel")
    default = run(str(venv / "bin" / "oorkiller"), "print-default-config").stdout
    with open(os.path.join(SOURCE, "config", "oorkiller.yaml")) as f:
        assert default == f.read()
    assert run(python, "-m", "oorkiller", "--version").stdout.startswith("oorkiller ")
