#!/usr/bin/env bash
# The whole test suite: every crate's unit, property and integration tests in
# parallel, then the tests that need root (TAP devices, network namespaces) as their
# own serial step. Run as root to include those; without root they say SKIPPED, and
# under CI=true a missing capability fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && ! command -v ip >/dev/null 2>&1; then
  echo "installing iproute2 (the root tests call ip)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
fi

cargo test --workspace --exclude podplane-tap
cargo test -p podplane-tap -- --test-threads=1
