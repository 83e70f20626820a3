#!/usr/bin/env bash
# Builds the kernel tier's tests and runs them in a QEMU guest with a stock Debian kernel,
# where BPF LSM programs load (see vm/run.sh). Exit code: the tests'.
set -euo pipefail
cd "$(dirname "$0")/.."
exe=$(cargo test --locked -p rampart-selfprotect --test kernel_tier --no-run --message-format=json 2>/dev/null \
  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[ -x "$exe" ] || { echo "vm: building the kernel tier tests failed" >&2; exit 1; }
# attack tools busybox lacks, from the host (scripts/install-deps.sh installs them)
files=()
for tool in bpftool chattr lsattr pkill pgrep setfattr strace; do
  path=$(command -v "$tool" || true)
  [ -n "$path" ] || { echo "vm: $tool is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
  files+=(--file "$path:/usr/bin/$tool")
done
exec vm/run.sh "${files[@]}" -- "$exe" --ignored --test-threads=1 "$@"
