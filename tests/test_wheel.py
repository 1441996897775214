"""The wheel: tools/build-wheel.sh builds a manylinux one from a copy of the
source tree (for this test's Python only), it installs into a fresh virtual
environment with nothing but its dependencies' wheels (no index) and no C
compiler reachable, and the installed `oorkiller` works from there, native
parts included.

Slow (about a minute): the native extensions are compiled from scratch, once
for the whole module. The script's build venv is cached (~/.cache/oorkiller-build),
so only the first run on a machine downloads the build requirements.
"""
import os
import re
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


COMPILERS = ("cc", "gcc", "c++", "g++", "x86_64-linux-gnu-gcc", "clang")


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    """A directory holding the repaired oorkiller wheel and its dependencies' wheels."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    shutil.copytree(SOURCE, source, ignore=NOT_SOURCE)   # never build in the shared checkout
    house = base / "wheels"
    built = subprocess.run(["bash", str(source / "tools" / "build-wheel.sh"), "--python", sys.executable,
                            "--out", str(house)], capture_output=True, text=True, timeout=600, cwd="/")
    if built.returncode == 3:    # the script's "cannot install the build requirements"
        pytest.skip(f"cannot make the build venv (offline?): {built.stderr[-300:]}")
    assert built.returncode == 0, f"stdout:\n{built.stdout}\nstderr:\n{built.stderr}"
    fetched = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                              "-d", str(house), "PyYAML>=6.0", "cffi>=1.15"],
                             capture_output=True, text=True, timeout=300, cwd="/")
    if fetched.returncode != 0:
        pytest.skip(f"cannot fetch the dependencies' wheels (offline?): {fetched.stderr[-300:]}")
    return house


@pytest.fixture(scope="module")
def no_compiler_path(tmp_path_factory):
    """A PATH holding only python: pip finds no C compiler on it."""
    bin_dir = tmp_path_factory.mktemp("bin")
    for name in ("python", "python3"):
        os.symlink(sys.executable, bin_dir / name)
    return str(bin_dir)


@pytest.fixture(scope="module")
def venv(wheelhouse, no_compiler_path, tmp_path_factory):
    """A fresh venv with the wheel installed offline, with no compiler in reach:
    anything pip had to build from source would fail."""
    env_dir = tmp_path_factory.mktemp("venv") / "env"
    stripped = {**os.environ, "PATH": no_compiler_path}
    run(sys.executable, "-m", "venv", str(env_dir), env=stripped)
    run(str(env_dir / "bin" / "pip"), "install", "-q", "--no-index", "--find-links", str(wheelhouse),
        "oorkiller", env=stripped)
    return env_dir


def test_the_script_builds_one_manylinux_wheel_for_this_python(wheelhouse):
    [wheel] = [name for name in os.listdir(wheelhouse) if name.startswith("oorkiller-")]
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    python_tag, abi_tag, platforms = wheel[:-len(".whl")].split("-")[-3:]
    assert (python_tag, abi_tag) == (tag, tag), wheel
    assert all(p.startswith("manylinux") for p in platforms.split(".")), wheel   # not plain linux_x86_64
    assert any(re.fullmatch(r"manylinux_2_\d+_x86_64", p) for p in platforms.split(".")), wheel


def test_the_wheel_installs_and_runs_without_a_compiler(venv, no_compiler_path, tmp_path):
    for compiler in COMPILERS:
        assert shutil.which(compiler, path=no_compiler_path) is None, compiler
    oorkiller = str(venv / "bin" / "oorkiller")
    config = tmp_path / "default.yaml"
    config.write_text(run(oorkiller, "print-default-config").stdout)
    os.chmod(config, 0o644)
    result = run(oorkiller, "check-config", str(config), env={**os.environ, "PATH": no_compiler_path})
    assert result.stdout.strip() == f"{config}: ok"


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
