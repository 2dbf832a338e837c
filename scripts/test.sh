#!/usr/bin/env bash
# The test command: sets up the pinned Python venv, checks formatting and
# lints, then runs every test (unit, property, end-to-end with real daemons
# and zarr-python, IPFS clients in Python and JavaScript). Needs cargo,
# python3 (>= 3.11) with venv, npm, diff.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh
scripts/setup-js.sh
cargo fmt --all -- --check
python3 scripts/check-module-cycles.py
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked -- --test-threads=2
