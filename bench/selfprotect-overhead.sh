#!/usr/bin/env bash
# Self-protection's overhead on unrelated work, in one run: the same workloads with the agent's
# self-protection in force (the strongest tier this kernel allows) and lifted by an authorized
# unload, the agent and the server running throughout, several rounds, medians and ratios. Workloads: an open/close loop, a write loop, a fork/exec
# loop, and untar + build of a generated C tree (make -j2).
# Usage: bench/selfprotect-overhead.sh     (ROUNDS=3 N_OPEN=200000 N_WRITE=20000 N_FORK=2000)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
N_OPEN=${N_OPEN:-200000}
N_WRITE=${N_WRITE:-20000}
N_FORK=${N_FORK:-2000}
C_FILES=${C_FILES:-300}

cargo build --release --locked -p rampart-cli -p rampart-bench-overhead >&2
bin=$PWD/target/release/rampart
wl=$PWD/target/release/rampart-bench-overhead
work=$(mktemp -d /var/tmp/rampart-overhead-work.XXXXXX)
root=$(mktemp -d /var/tmp/rampart-overhead-root.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
password="overhead-bench-unload"

stop_agent() {
  if [ -e "$root/var/lib/rampart/agent/control.sock" ] || [ -e "$root/var/lib/rampart/server" ]; then
    RAMPART_UNLOAD_PASSWORD=$password "$bin" --root "$root" agent unload >/dev/null 2>&1 || true
    "$bin" --root "$root" down >/dev/null 2>&1 || true
  fi
}

cleanup() {
  stop_agent
  chattr -R -i "$root" 2>/dev/null || true
  rm -rf "$work" "$root"
}
trap cleanup EXIT

# a mid-size C tree: C_FILES files of a few functions each, and a Makefile
src=$work/src
mkdir -p "$src"
for i in $(seq 1 "$C_FILES"); do
  {
    echo "#include <stdio.h>"
    echo "#include <string.h>"
    for f in 1 2 3 4 5 6 7 8; do
      echo "int f${i}_$f(const char *s) { int h = $f; for (size_t k = 0; k < strlen(s); k++) h = h * 31 + s[k]; return h; }"
    done
  } > "$src/unit$i.c"
done
printf 'OBJS := $(patsubst %%.c,%%.o,$(wildcard *.c))\nall: libtree.a\nlibtree.a: $(OBJS)\n\tar rcs $@ $^\n%%.o: %%.c\n\tcc -O1 -c $< -o $@\n' > "$src/Makefile"
tar -C "$work" -cf "$work/tree.tar" src
rm -rf "$src"
touch "$work/read.dat" "$work/write.dat"

declare -A results
measure() { # MODE
  local mode=$1 t
  t=$("$wl" open-close "$N_OPEN" "$work/read.dat"); results[$mode,open]+="$t "
  t=$("$wl" write "$N_WRITE" "$work/write.dat"); results[$mode,write]+="$t "
  t=$("$wl" fork-exec "$N_FORK"); results[$mode,fork]+="$t "
  local b=$work/build
  rm -rf "$b"; mkdir -p "$b"
  local s e
  s=$(date +%s.%N)
  tar -C "$b" -xf "$work/tree.tar" && make -s -C "$b/src" -j2 >/dev/null
  e=$(date +%s.%N)
  results[$mode,build]+="$(python3 -c "print($e - $s)") "
}

tier="none"
# each round: the agent and the server run throughout; only self-protection differs
for round in $(seq 1 "$ROUNDS"); do
  "$bin" --root "$root" up --detach --listen "127.0.0.1:$port" >/dev/null 2>&1
  if [ "$round" = 1 ]; then
    "$bin" --root "$root" policy set - >/dev/null 2>&1 <<JSON
{"checkin": {"interval_seconds": 60}, "unload": {"password": "$password"}}
JSON
    # wait until the agent holds the policy with the unload password
    for _ in $(seq 1 100); do
      [ "$("$bin" --root "$root" agent status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["applied_policy_version"])')" = 2 ] && break
      "$bin" --root "$root" down >/dev/null 2>&1; "$bin" --root "$root" up --detach --listen "127.0.0.1:$port" >/dev/null 2>&1
    done
  fi
  tier=$("$bin" --root "$root" agent status --json | python3 -c 'import json,sys; p=json.load(sys.stdin)["protections"][0]; print(p["state"] + (": " + p["reason"] if p.get("reason") else ""))')
  echo "round $round/$ROUNDS: protection on" >&2
  measure on
  RAMPART_UNLOAD_PASSWORD=$password "$bin" --root "$root" agent unload >/dev/null
  echo "round $round/$ROUNDS: protection off (unloaded; agent and server still running)" >&2
  measure off
  "$bin" --root "$root" down >/dev/null 2>&1
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo
echo "Self-protection overhead, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, kernel $(uname -r), $ROUNDS rounds (medians)"
echo "Agent's self-protection while on: $tier"
echo
echo "| workload | off | on | on/off |"
echo "|---|---:|---:|---:|"
for w in open write fork build; do
  case $w in
    open) label="open+close × $N_OPEN" ;;
    write) label="open+write 4 KiB+close × $N_WRITE" ;;
    fork) label="fork+exec /bin/true × $N_FORK" ;;
    build) label="untar + make -j2 of $C_FILES C files" ;;
  esac
  off=$(echo "${results[off,$w]}" | median)
  on=$(echo "${results[on,$w]}" | median)
  printf '| %s | %.3f s | %.3f s | %.3f× |\n' "$label" "$off" "$on" "$(python3 -c "print($on / $off)")"
done
