#!/usr/bin/env bash
# Builds the kernel tier's tests and the self-protection end-to-end scenario, and runs them in a
# QEMU guest with a stock Debian kernel, where BPF LSM programs load (see vm/run.sh).
# Exit code: the tests'.
set -euo pipefail
cd "$(dirname "$0")/.."

test_exe() { # PACKAGE TEST
  cargo test --locked -p "$1" --test "$2" --no-run --message-format=json 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1
}
cargo build --locked -p rampart-cli
kernel_tier=$(test_exe rampart-selfprotect kernel_tier)
e2e=$(test_exe rampart-tests e2e)
for exe in "$kernel_tier" "$e2e"; do
  [ -x "$exe" ] || { echo "vm: building the tests failed" >&2; exit 1; }
done

# attack tools busybox lacks, from the host (scripts/install-deps.sh installs them)
files=(--file "target/debug/rampart:/test/rampart" --file "$e2e:/test/e2e")
for tool in bpftool chattr lsattr pkill pgrep setfattr strace timeout install; do
  path=$(command -v "$tool" || true)
  [ -n "$path" ] || { echo "vm: $tool is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
  files+=(--file "$path:/usr/bin/$tool")
done

runner=$(mktemp)
trap 'rm -f "$runner"' EXIT
cat > "$runner" <<'RUN'
#!/bin/sh
/test/kernel_tier --ignored --test-threads=1 || exit $?
/test/e2e --ignored --test-threads=1 --nocapture battery:: selfprotect:: || exit $?
RUN
chmod +x "$runner"
exec vm/run.sh "${files[@]}" --file "$kernel_tier:/test/kernel_tier" -- "$runner"
