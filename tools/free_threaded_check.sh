#!/usr/bin/env bash
# Run normdrop's test suite on a free-threaded CPython 3.14 (3.14t), built here from source.
#
# CI runs on the machine's CPython 3.11; this script checks the interpreter that changed the
# most since: no GIL, borrowed references in loops, threads that inherit contexts. It builds
# CPython with --disable-gil from Debian's copy of the upstream source (deb.debian.org, which
# this project's machines reach; python.org may not be reachable), once, into a cache
# folder, makes a venv with NumPy, Numba and llvmlite's cp314t wheels and Dask from PyPI,
# installs normdrop editable with pytest, and runs the suite (extras without cp314t wheels,
# such as PyTorch and the CUDA simulator, skip). About 5 minutes to build on 2 cores, then
# 5 to test.
#
#   bash tools/free_threaded_check.sh              # the whole suite
#   bash tools/free_threaded_check.sh tests/test_host_pool.py -k held   # pytest arguments
#
# Environment: PY314T_VERSION (default 3.14.7, a version whose orig tarball Debian's pool
# has), PY314T_CACHE (default ~/.cache/normdrop-py314t).
set -euo pipefail

version="${PY314T_VERSION:-3.14.7}"
cache="${PY314T_CACHE:-$HOME/.cache/normdrop-py314t}"
prefix="$cache/python-$version-t"
repo="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$cache"

if [ ! -x "$prefix/bin/python3.14t" ]; then
  echo "building CPython $version with --disable-gil into $prefix"
  tarball="$cache/python3.14_$version.orig.tar.xz"
  curl -fsS -o "$tarball" \
    "http://deb.debian.org/debian/pool/main/p/python3.14/python3.14_$version.orig.tar.xz"
  src="$cache/src-$version"
  rm -rf "$src" && mkdir -p "$src"
  tar -xf "$tarball" -C "$src" --strip-components=1
  (cd "$src" && ./configure --disable-gil --prefix="$prefix" --without-ensurepip >/dev/null \
    && make -j"$(nproc)" >/dev/null && make install >/dev/null)
fi

venv="$cache/venv-$version-t"
if [ ! -x "$venv/bin/pip" ]; then
  "$prefix/bin/python3.14t" -m venv --without-pip "$venv"
  wheels="$(mktemp -d)"
  python3 -m pip download -q --no-deps -d "$wheels" pip
  pip_wheel="$(ls "$wheels"/pip-*.whl)"
  "$venv/bin/python" "$pip_wheel/pip" install -q "$pip_wheel"  # pip runs from its own wheel
fi
"$venv/bin/pip" install -q numpy numba "dask[array]" distributed pytest pytest-xdist hypothesis \
  setuptools wheel
"$venv/bin/pip" install -q --no-deps -e "$repo"

cd "$repo"
"$venv/bin/python" -c "import sys; print(sys.version); assert not sys._is_gil_enabled()"
NUMBA_CACHE_DIR="$cache/numba-cache" "$venv/bin/python" -m pytest -q -n 2 -p no:cacheprovider \
  "${@:-tests}"
"$venv/bin/python" -c "import sys, normdrop, numba; print('GIL still disabled:', not sys._is_gil_enabled())"
