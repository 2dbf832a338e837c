#!/usr/bin/env bash
# Creates .venv with the pinned Python packages the real-client tests use
# (zarr-python, xarray, dask, numcodecs). Idempotent: does nothing when the
# venv already matches tests/python/requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
req=tests/python/requirements.txt
py=${PYTHON:-python3}
hash=$(sha256sum "$req" | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ "$(cat .venv/.req-hash 2>/dev/null)" = "$hash" ]; then
  exit 0
fi
command -v "$py" >/dev/null || { echo "setup-venv: $py not found; install Python >= 3.11" >&2; exit 1; }
rm -rf .venv
"$py" -m venv .venv || { echo "setup-venv: '$py -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -r "$req"
echo "$hash" > .venv/.req-hash
echo "setup-venv: .venv ready ($(.venv/bin/python -c 'import zarr, xarray; print("zarr", zarr.__version__, "xarray", xarray.__version__)'))"
