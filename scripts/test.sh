#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this and nothing else):
# installs what the tests need, starts a throw-away PostgreSQL, then format, lints, build, tests.
# Run as root on Debian: privileged tests (fanotify, BPF, mounts) run for real, never skipped in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

scripts/install-deps.sh --for test

was_running=$(scripts/test-postgres.sh status)
RAMPART_TEST_POSTGRES_URL=$(scripts/test-postgres.sh start)
export RAMPART_TEST_POSTGRES_URL
[ "$was_running" = running ] || trap 'scripts/test-postgres.sh stop' EXIT

echo "== format"
cargo fmt --all --check
echo "== lints"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== build"
cargo build --workspace --locked --bins
echo "== tests"
cargo test --workspace --locked --no-fail-fast
echo "== kernel tier, in a QEMU guest with a stock Debian kernel"
vm/kernel-tier-tests.sh

echo "== whole suite took $(( $(date +%s) - start )) s"
