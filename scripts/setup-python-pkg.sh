#!/usr/bin/env bash
# Builds the Python package's wheel (the pure-Python `shoal` package and
# the `shoal` binary, through maturin) and installs it into a clean venv,
# .venv-pkg, beside the pinned packages of tests/python/requirements-pkg.txt
# (xarray, zarr-python, dask, fsspec, nbclient). The package tests and the
# notebook run there. SHOAL_WHEEL_PROFILE picks the cargo profile of the
# binary in the wheel (default dev: the build the tests already made;
# `release` for a wheel to ship).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
req=tests/python/requirements-pkg.txt
profile=${SHOAL_WHEEL_PROFILE:-dev}
command -v "$py" >/dev/null || { echo "setup-python-pkg: $py not found; install Python >= 3.11" >&2; exit 1; }
rm -rf .venv-pkg
"$py" -m venv .venv-pkg || { echo "setup-python-pkg: '$py -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }
.venv-pkg/bin/pip install --quiet --upgrade pip
.venv-pkg/bin/pip install --quiet -r "$req"
# What a scientist runs: pip install ./python (maturin builds the binary).
MATURIN_PEP517_ARGS="--profile $profile --locked" .venv-pkg/bin/pip install --quiet --no-deps ./python
.venv-pkg/bin/shoal --version >/dev/null || { echo "setup-python-pkg: the wheel's shoal binary does not run" >&2; exit 1; }
echo "setup-python-pkg: .venv-pkg ready ($(.venv-pkg/bin/python -c 'import shoal, fsspec; print("shoal", fsspec.get_filesystem_class("shoal").__module__)'))"
