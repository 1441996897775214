"""Build-only glue: declares the compiled parts. Metadata lives in pyproject.toml.

- `oorkiller/proc/*.pyx` -> `oorkiller.proc._readers`, `._proctable`, `._calm` (Cython)
- `_native/kernel_build.py` -> `oorkiller._kernel` (cffi, API mode)
- `config/oorkiller.yaml` is copied into the package as `default.yaml`, so the
  file operators read in the repository is byte for byte the embedded default;
  `config/oorkiller.service` ships beside it for installs from the wheel.
"""
import shutil
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildPyWithDefaultConfig(build_py):
    def run(self):
        super().run()
        package = Path(self.build_lib) / "oorkiller"
        package.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HERE / "config" / "oorkiller.yaml", package / "default.yaml")
        shutil.copyfile(HERE / "config" / "oorkiller.service", package / "oorkiller.service")


def native_extensions():
    flags = ["-O2", "-Wno-unused-function"]
    exts = [
        Extension(f"oorkiller.proc.{name}", [f"oorkiller/proc/{name}.pyx"],
                  include_dirs=["oorkiller/proc"], extra_compile_args=flags)
        for name in ("_readers", "_proctable", "_calm")
    ]
    return cythonize(exts, language_level=3,
                     compiler_directives={"boundscheck": False, "wraparound": False})


setup(
    ext_modules=native_extensions(),
    cffi_modules=["oorkiller/kernel_build.py:ffibuilder"],
    cmdclass={"build_py": BuildPyWithDefaultConfig},
)
