#!/usr/bin/env bash
# The test command: sets up the pinned Python venv, checks formatting and
# lints, then runs every test (unit, property, end-to-end with real daemons
# and zarr-python, IPFS clients in Python and JavaScript, the Python
# package and its notebook). Needs cargo,
# python3 (>= 3.11) with venv, npm, diff.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh
scripts/setup-js.sh
cargo fmt --all -- --check
python3 scripts/check-module-cycles.py
# The tests build with the test-only faults (lying, slow, withholding
# peers); the shipped build must not carry them.
cargo clippy --workspace --all-targets --locked --features shoal/test-faults -- -D warnings
cargo build -p shoal --locked
if grep -q SHOAL_TEST_ target/debug/shoal; then
  echo "test.sh: the shipped build of shoal carries test faults (SHOAL_TEST_)" >&2
  exit 1
fi
# The Python package: its wheel (with that build of the binary) into a
# clean venv, for daemon/tests/python_pkg.rs.
scripts/setup-python-pkg.sh
cargo test --workspace --locked --features shoal/test-faults -- --test-threads=2
