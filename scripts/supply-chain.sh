#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (deny.toml): licences, duplicate versions, crate
# sources, and RustSec advisories when the advisory database can be fetched.
# Installs the pinned cargo-deny first if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/setup.sh
ensure_debian_packages

DENY_VERSION=0.20.2
if ! cargo deny --version 2>/dev/null | grep -q " $DENY_VERSION\$"; then
    echo "installing cargo-deny $DENY_VERSION (a few minutes, once)" >&2
    cargo install --locked --quiet cargo-deny --version "$DENY_VERSION"
fi

cargo deny check bans licenses sources

# The advisory database is a git repository on github.com. Where it cannot be reached the
# check is reported as not run, loudly; CHORUS_REQUIRE_ADVISORIES=1 makes that a failure.
if cargo deny fetch db >/dev/null 2>&1; then
    cargo deny check advisories
else
    echo "supply-chain: advisories NOT CHECKED: the RustSec advisory database could not be fetched" >&2
    if [ "${CHORUS_REQUIRE_ADVISORIES:-0}" = 1 ]; then
        exit 1
    fi
fi
