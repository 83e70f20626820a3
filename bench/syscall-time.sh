#!/usr/bin/env bash
# Where a program's time goes, system call by system call: runs COMMAND while bpftrace sums the
# time every process named NAME spends in each system call, then prints the calls that took the
# most (total ms, count, mean µs). Run it on the same workload with and without the agent to see
# which calls protection makes slower (how the README's sqlite and convert figures were found).
#
# Usage: bench/syscall-time.sh NAME COMMAND...   e.g. bench/syscall-time.sh sqlite3 sh -c '…'
# Needs root and bpftrace (scripts/install-deps.sh --for test installs it); mounts tracefs if it
# is not mounted.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 NAME COMMAND..." >&2; exit 2; }
name=$1; shift
command -v bpftrace >/dev/null || { echo "bench: bpftrace is missing (scripts/install-deps.sh --for test installs it)" >&2; exit 1; }
[ -d /sys/kernel/tracing/events ] || mount -t tracefs nodev /sys/kernel/tracing
out=$(mktemp)
trap 'rm -f "$out"' EXIT
bpftrace -e "
tracepoint:raw_syscalls:sys_enter /comm == \"$name\"/ { @at[tid] = nsecs; @nr[tid] = args->id; }
tracepoint:raw_syscalls:sys_exit /comm == \"$name\" && @at[tid]/ {
  @ns[@nr[tid]] = sum(nsecs - @at[tid]); @n[@nr[tid]] = count(); delete(@at[tid]); delete(@nr[tid]); }
END { clear(@at); clear(@nr); }" >"$out" 2>/dev/null &
tracer=$!
# attached once it prints its first line
for _ in $(seq 1 100); do [ -s "$out" ] && break; sleep 0.1; done
"$@" || echo "bench: the command failed ($?)" >&2
kill -INT "$tracer"; wait "$tracer" || true
python3 - "$out" <<'PY'
import re, sys
ns, n = {}, {}
for line in open(sys.argv[1]):
    m = re.match(r'@(ns|n)\[(\d+)\]: (\d+)', line)
    if m:
        (ns if m.group(1) == 'ns' else n)[int(m.group(2))] = int(m.group(3))
# x86_64 numbers of the calls that matter here (others print as numbers)
names = {0: 'read', 1: 'write', 2: 'open', 3: 'close', 4: 'stat', 5: 'fstat', 8: 'lseek',
         9: 'mmap', 10: 'mprotect', 11: 'munmap', 12: 'brk', 16: 'ioctl', 17: 'pread64',
         18: 'pwrite64', 21: 'access', 41: 'socket', 42: 'connect', 59: 'execve', 72: 'fcntl',
         74: 'fsync', 75: 'fdatasync', 76: 'truncate', 77: 'ftruncate', 82: 'rename',
         87: 'unlink', 217: 'getdents64', 257: 'openat', 262: 'newfstatat', 263: 'unlinkat',
         264: 'renameat', 316: 'renameat2', 332: 'statx'}
print(f"{'system call':>16} {'total ms':>10} {'calls':>8} {'mean µs':>9}")
for k, v in sorted(ns.items(), key=lambda x: -x[1])[:15]:
    print(f"{names.get(k, str(k)):>16} {v / 1e6:10.1f} {n.get(k, 0):8d} {v / max(n.get(k, 1), 1) / 1e3:9.1f}")
print(f"{'all':>16} {sum(ns.values()) / 1e6:10.1f} {sum(n.values()):8d}")
PY
