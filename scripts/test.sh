#!/usr/bin/env bash
# The test command (README): installs what a fresh machine lacks, then runs
# every Rust test (unit, storage, multi-process) and the slixmpp interop suite.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/setup.sh

ensure_debian_packages
ensure_prosody
ensure_python_venv

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --workspace --all-targets
export TEST_CHORUS_BIN="$CARGO_TARGET_DIR/debug/chorus"
cargo test --workspace
.venv/bin/python -m pytest -q tests/interop
