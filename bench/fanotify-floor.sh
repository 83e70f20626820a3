#!/usr/bin/env bash
# What being watched through fanotify costs a program that makes documents, whoever watches:
# the bench's `rsync` workload (copy a corpus of DOCS documents, append to its .md files, copy
# again; three times a timing) under `fanotify-floor` — a listener that watches the folder as
# the ransomware protection does and does nothing else (see bench/fanotify-floor.c) — and with
# nothing watching, PAIRS alternating pairs of timings for each of its builds:
#
#   notify   the notification group only (names made, renamed, deleted, closed after writing);
#   marks    + the permission group's marks on folders and their calm ignore marks;
#   guard    + each new document opened and marked for permission events;
#   full     + a read lease on each (what the agent does for every document it guards).
#
# The ratio (median with it / median without it, wall and CPU time of the workload) is the
# floor below which no agent built on these mechanisms goes; bench/ransomware.sh gives the
# agent's own figure for the same workload. Both sides on an ext4 filesystem in memory.
#
# Usage: bench/fanotify-floor.sh     (DOCS=2000 PAIRS=10 BUILDS="notify marks guard full")
# Results: target/bench-floor/DATE/table.md and times.tsv. Needs root, a C compiler, rsync.
set -euo pipefail
cd "$(dirname "$0")/.."
DOCS=${DOCS:-2000}
PAIRS=${PAIRS:-10}
BUILDS=${BUILDS:-"notify marks guard full"}
for tool in cc rsync python3 mkfs.ext4; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (scripts/install-deps.sh --for test installs it)" >&2; exit 1; }
done
cargo build --release --locked -p rampart-ransim >&2
sim=$PWD/target/release/rampart-ransim
out=$PWD/target/bench-floor/$(date -u +%Y%m%dT%H%MZ)
mkdir -p "$out/bin"
declare -A flags=([notify]="-DPERMISSION=0 -DDOCUMENTS=0" [marks]="-DDOCUMENTS=0" [guard]="-DLEASES=0" [full]="")
for b in $BUILDS; do
  # shellcheck disable=SC2086 # the flags are words
  cc -O2 -Wall -Wextra -pthread ${flags[$b]} -o "$out/bin/$b" bench/fanotify-floor.c
done

fs=$(mktemp -d /tmp/rampart-floor-fs.XXXXXX)
image=$(mktemp /dev/shm/rampart-floor-fs.XXXXXX)
listener=
cleanup() {
  [ -n "$listener" ] && kill "$listener" 2>/dev/null && wait "$listener" 2>/dev/null
  umount "$fs" 2>/dev/null; rmdir "$fs"; rm -f "$image"
}
trap cleanup EXIT
truncate -s 4G "$image"
mkfs.ext4 -q -F "$image"
mount -o loop "$image" "$fs"
echo "making a corpus of $DOCS documents" >&2
"$sim" corpus "$fs/corpus" --count "$DOCS" --seed 1 >/dev/null

workload() { # DIR: the bench's rsync workload, three times
  cd "$1"
  for i in 1 2 3; do
    rsync -a src/ "mirror-$i/" && find src -name '*.md' | while read -r f; do echo changed >>"$f"; done \
      && rsync -a src/ "mirror-$i/"
  done
}
export -f workload
timing() { # BUILD SIDE: one timing in a fresh copy of the corpus; prints wall and CPU ms
  local d=$fs/$1-$2
  rm -rf "$d" && mkdir -p "$d" && cp -a "$fs/corpus" "$d/src"
  if [ "$2" = watched ]; then
    "$out/bin/$1" "$d" >>"$out/listener-$1.log" &
    listener=$!
  fi
  sync
  echo 3 >/proc/sys/vm/drop_caches
  cat "$d"/src/*/*/* >/dev/null 2>&1 || true
  sleep 1
  local s e TIMEFORMAT='%3U %3S'
  s=$(date +%s%N)
  # the workload's CPU time, user and system, of all its processes
  { time bash -c "workload $d" >/dev/null 2>&1; } 2>"$out/cpu"
  e=$(date +%s%N)
  if [ -n "$listener" ]; then kill "$listener"; wait "$listener" 2>/dev/null || true; listener=; fi
  rm -rf "$d"
  echo "$(( (e - s) / 1000000 )) $(python3 -c 'import sys; u, s = sys.stdin.read().split(); print(round((float(u) + float(s)) * 1000))' <"$out/cpu")"
}

printf 'build\tpair\tside\twall_ms\tcpu_ms\n' >"$out/times.tsv"
for b in $BUILDS; do
  for p in $(seq 1 "$PAIRS"); do
    # the order alternates from pair to pair
    if [ $((p % 2)) = 1 ]; then sides="watched plain"; else sides="plain watched"; fi
    for side in $sides; do
      read -r wall cpu < <(timing "$b" "$side")
      printf '%s\t%s\t%s\t%s\t%s\n' "$b" "$p" "$side" "$wall" "$cpu" >>"$out/times.tsv"
    done
  done
  echo "$b: done" >&2
done

python3 - "$out/times.tsv" "$DOCS" "$PAIRS" >"$out/table.md" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print(f"rsync workload (3 × copy of {sys.argv[2]} documents, append, copy again), {sys.argv[3]} pairs a build\n")
print("| build | wall watched / plain (ms) | ratio | CPU watched / plain (ms) | ratio |")
print("|---|---|---|---|---|")
for b in dict.fromkeys(r["build"] for r in rows):
    def med(side, col):
        return statistics.median(float(r[col]) for r in rows if r["build"] == b and r["side"] == side)
    w, pw, c, pc = med("watched", "wall_ms"), med("plain", "wall_ms"), med("watched", "cpu_ms"), med("plain", "cpu_ms")
    print(f"| {b} | {w:.0f} / {pw:.0f} | {w / pw:.3f} | {c:.0f} / {pc:.0f} | {c / pc:.3f} |")
EOF
cat "$out/table.md"
echo "results: $out" >&2
