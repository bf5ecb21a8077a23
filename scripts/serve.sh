#!/usr/bin/env bash
# The run command (README): a zero-config node for domain `localhost`, data in
# ./data, clients on 127.0.0.1:5222 (STARTTLS) and :5223 (TLS), admin API on
# 127.0.0.1:5280. Extra arguments go to `chorus serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/setup.sh
ensure_debian_packages
cargo build --release --bin chorus
exec "${CARGO_TARGET_DIR:-target}/release/chorus" serve "$@"
