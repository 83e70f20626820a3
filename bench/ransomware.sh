#!/usr/bin/env bash
# Ransomware protection's figures, in one run, on a real server and agent (`rampart up`):
#
#  1. Detection: every family of the simulator (rampart-ransim) against a fresh copy of a corpus
#     of DOCS documents in real formats (made by the simulator, plus JPEGs from ImageMagick and
#     SQLite databases), ROUNDS times each: documents changed before conviction (median, max),
#     documents lost after the restore (checksums before and after), time from the first change
#     to the conviction (median, max).
#  2. Benign work: each workload of the benign set in a protected folder (false convictions
#     counted), and the same without the agent, ROUNDS times each: medians and the ratio.
#
# Usage: bench/ransomware.sh      (DOCS=2000 ROUNDS=3 REPEAT=1 BENCH_TMP=/var/tmp BENCH_FS=ram FAMILIES="inplace rename …" WORKLOADS="tar …"
#        — WORKLOADS=read, not in the default set, reads every document five times: the cost of
#        one permission event per open, the worst case;
#        PERF=1 records the agent with perf during each protected workload, PERF=system the
#        whole machine)
# Results: target/bench-ransomware/DATE/ (table.md, detection.tsv, incidents.json, agent.log, the
# simulator's and each workload's output). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
DOCS=${DOCS:-2000}
ROUNDS=${ROUNDS:-3}
FAMILIES=${FAMILIES:-"inplace new-file rename head blocks per-process workers mmap drip base64 xor wipe-truncate wipe-delete notes"}
WORKLOADS=${WORKLOADS:-"tar gzip zip git rsync sqlite sed convert package cargo editor office gpg"}
DRIP_MS=${DRIP_MS:-1000}
# each timing runs its workload REPEAT times in a row on the same tree: workloads of a second
# or two vary from run to run by more than the overhead looked for, ten runs of them less
REPEAT=${REPEAT:-1}

for tool in python3 convert sqlite3 zstd zip rsync git gpg dpkg-deb sha256sum; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (scripts/install-deps.sh --for test installs it)" >&2; exit 1; }
done
cargo build --release --locked -p rampart-cli -p rampart-ransim >&2
bin=$PWD/target/release/rampart
sim=$PWD/target/release/rampart-ransim
out=$PWD/target/bench-ransomware/$(date -u +%Y%m%dT%H%MZ)
mkdir -p "$out"
# BENCH_FS=ram: both sides on an ext4 filesystem in memory (a loop device on a file in
# /dev/shm, BENCH_FS_SIZE) — the virtual disks of these VMs vary from run to run by more than
# the overhead sought (the same unprotected three rsync copies took 0.75 s, then 3.4 s); in
# memory, what differs between the two sides is the agent's own cost. Else BENCH_TMP: where the
# agent's root and the unprotected side's folder go (one filesystem for both; the filesystem
# matters — see the README's sqlite figures)
ram=
if [ "${BENCH_FS:-disk}" = ram ]; then
  ram=$(mktemp -d /tmp/rampart-rw-fs.XXXXXX)
  image=$(mktemp /dev/shm/rampart-rw-fs.XXXXXX)
  truncate -s "${BENCH_FS_SIZE:-8G}" "$image"
  mkfs.ext4 -q -F "$image"
  mount -o loop "$image" "$ram"
  trap 'umount "$ram"; rmdir "$ram"; rm -f "$image"' EXIT  # until the full cleanup below
  BENCH_TMP=$ram
fi
root=$(mktemp -d "${BENCH_TMP:-/var/tmp}/rampart-rw-root.XXXXXX")
work=$(mktemp -d "${BENCH_TMP:-/var/tmp}/rampart-rw-work.XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
password="ransomware-bench-unload"
r() { "$bin" --root "$root" "$@"; }

cleanup() {
  cp "$root/var/log/rampart/agent.log" "$out/agent.log" 2>/dev/null || true
  # what was convicted, also when the run stops early (the root goes below)
  [ -s "$out/incidents.json" ] || r ransomware incidents --json >"$out/incidents.json" 2>/dev/null || true
  if [ -e "$root/var/lib/rampart/agent/control.sock" ] || [ -e "$root/var/lib/rampart/server" ]; then
    RAMPART_UNLOAD_PASSWORD=$password r agent unload >/dev/null 2>&1 || true
    r down >/dev/null 2>&1 || true
  fi
  chattr -R -i "$root" 2>/dev/null || true
  rm -rf "$work" "$root"
  if [ -n "$ram" ]; then
    umount "$ram" && rmdir "$ram" && rm -f "$image"
  fi
}
trap cleanup EXIT

# --- the corpus: DOCS documents, a pristine tar of them --------------------------------------
echo "making a corpus of $DOCS documents" >&2
corpus=$work/corpus
"$sim" corpus "$corpus" --count "$DOCS" --seed 1 >/dev/null
mkdir -p "$corpus/Photos/camera" "$corpus/Finance/ledgers"
for i in $(seq 1 40); do
  convert -size 160x120 "plasma:fractal" -seed "$i" "$corpus/Photos/camera/IMG_$((1000 + i)).jpg"
done
for i in $(seq 1 10); do
  sqlite3 "$corpus/Finance/ledgers/ledger-$i.sqlite" \
    "create table entry(id integer primary key, day text, amount real, memo text);
     with recursive n(k) as (select 1 union all select k + 1 from n where k < 400)
     insert into entry(day, amount, memo) select date('2026-01-01', '+' || (k % 365) || ' days'), k * 1.25, 'entry ' || k from n;"
done
total=$(find "$corpus" -type f | wc -l)
tar -C "$corpus" -cf "$work/corpus.tar" .
rm -rf "$corpus"

# each workload's tree goes once it is timed, so every workload meets a host with the corpus's
# documents and no more: removed by a copy of rm the policy trusts (an administrator's cleanup;
# an untrusted rm of thousands of documents is a wiper)
cp "$(command -v rm)" "$work/bench-rm"

# --- server and agent ------------------------------------------------------------------------
policy() { # FOLDER
  r policy set - >/dev/null <<JSON
{"checkin": {"interval_seconds": 1}, "unload": {"password": "$password"},
 "ransomware": {"mode": "block", "folders": ["$1"],
                "trusted_programs": [{"path": "$work/bench-rm", "sha256": "$(sha256sum "$work/bench-rm" | cut -d' ' -f1)"}]}}
JSON
}
# waits until the agent protects FOLDER and has walked it
wait_protected() { # FOLDER
  local want=$1
  for _ in $(seq 1 600); do
    if r ransomware status --json 2>/dev/null | WANT=$want python3 -c '
import json, os, sys
s = json.load(sys.stdin)
reason = s["status"].get("reason") or ""
ok = s["folders"] == [os.environ["WANT"]] and "starting" not in reason and "folder(s) watched" in reason and "none of" not in reason
sys.exit(0 if ok else 1)'; then
      return 0
    fi
    sleep 0.1
  done
  echo "bench: the agent did not protect $want within 60 s" >&2
  r ransomware status >&2 || true
  exit 1
}
incidents() { r ransomware incidents --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
checksums() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }

r up --detach --listen "127.0.0.1:$port" >"$out/up.log" 2>&1
mkdir -p "$root/bench"

# --- 1. detection ----------------------------------------------------------------------------
: >"$out/detection.tsv"
for family in $FAMILIES; do
  for round in $(seq 1 "$ROUNDS"); do
    dir=/bench/$family-$round
    mkdir -p "$root$dir"
    tar -C "$root$dir" -xf "$work/corpus.tar"
    policy "$dir"
    wait_protected "$dir"
    # the previous run's tree is no longer protected: away with it
    [ -n "${prev:-}" ] && rm -rf "$root$prev"
    prev=$dir
    checksums "$root$dir" >"$work/before"
    n0=$(incidents)
    # a program of its own (a blocked program stays blocked, by content: the copy's bytes differ)
    copy=$work/sim-$family-$round
    cp "$sim" "$copy" && printf '\nbench copy %s\n' "$copy" >>"$copy"
    delay=0; [ "$family" = drip ] && delay=$DRIP_MS
    setsid "$copy" "$family" "$root$dir" --delay-ms "$delay" >"$out/sim-$family-$round.out" 2>&1 || true
    for _ in $(seq 1 600); do [ "$(incidents)" -gt "$n0" ] && break; sleep 0.1; done
    checksums "$root$dir" >"$work/after"
    lost=$(comm -23 <(sort "$work/before") <(sort "$work/after") | wc -l)
    left=$(comm -13 <(cut -c67- "$work/before" | sort) <(cut -c67- "$work/after" | sort) | wc -l)
    r ransomware incidents --json | N0=$n0 F="$family" R="$round" LOST="$lost" LEFT="$left" python3 -c '
import json, os, sys
all = json.load(sys.stdin)
n0 = int(os.environ["N0"])
new = all[n0:]
if not new:
    print("\t".join([os.environ["F"], os.environ["R"], "none", "-", "-", os.environ["LOST"], os.environ["LEFT"]]))
else:
    i = new[0]
    print("\t".join([os.environ["F"], os.environ["R"], i["id"], str(i["changed_before_conviction"]),
                     str(i["convicted_ms"] - i["first_change_ms"]), os.environ["LOST"], os.environ["LEFT"]]))
' | tee -a "$out/detection.tsv" >&2
  done
done
r ransomware incidents --json >"$out/incidents.json"

# --- 2. benign work, with the agent protecting its folder and without the agent ---------------
workload() { # NAME DIR ITERATION (the corpus is in DIR/src; ITERATION names what a repeat adds)
  local d=$2 i=$3
  cd "$d"
  case $1 in
    tar) tar czf backup.tar.gz src && tar --zstd -cf backup.tar.zst src && mkdir x-$i && tar -xzf backup.tar.gz -C x-$i ;;
    gzip) gzip -r src && gunzip -r src ;;
    zip) zip -qr docs-$i.zip src && mkdir unpacked-$i && (cd unpacked-$i && unzip -q ../docs-$i.zip) ;;
    git) git init -q repo-$i && cp -r src/Documents repo-$i/ && cd repo-$i && git add -A \
           && git -c user.name=b -c user.email=b@example.org commit -qm one \
           && git checkout -qb other && find Documents -name '*.txt' | sed -n '1,50p' | while read -r f; do echo more >>"$f"; done \
           && git -c user.name=b -c user.email=b@example.org commit -qam two && git checkout -q - && git gc -q \
           && cd .. && git clone -q repo-$i copy-$i && cd copy-$i && git checkout -q other ;;
    read) for _ in 1 2 3 4 5; do find src -type f -print0 | xargs -0 cat >/dev/null; done ;;
    rsync) rsync -a src/ mirror-$i/ && find src -name '*.md' | while read -r f; do echo changed >>"$f"; done && rsync -a src/ mirror-$i/ ;;
    sqlite) sqlite3 app-$i.db 'create table t(k integer primary key, v text)' \
           && for n in $(seq 1 200); do sqlite3 app-$i.db "insert into t(v) values ('row $n')"; done \
           && sqlite3 app-$i.db 'update t set v = upper(v); vacuum' ;;
    # every text document (1,180 of the corpus's; its 118 .txt alone made a 0.05-s run, too
    # short to time on these VMs)
    sed) find src \( -name '*.txt' -o -name '*.md' -o -name '*.csv' -o -name '*.html' -o -name '*.xml' \
           -o -name '*.json' -o -name '*.rs' -o -name '*.py' -o -name '*.eml' -o -name '*.rtf' \) -print0 \
           | xargs -0 sed -i 's/the/THE/g' ;;
    convert) for f in src/Photos/camera/*.jpg; do convert "$f" -resize 50% "${f%.jpg}.png" && convert "$f" -rotate 90 "$f"; done ;;
    package) mkdir -p pkg/DEBIAN pkg/usr/share/doc/demo \
           && printf 'Package: demo\nVersion: 1.0\nArchitecture: all\nMaintainer: t\nDescription: demo\n' >pkg/DEBIAN/control \
           && cp -r src/Documents pkg/usr/share/doc/demo/ && dpkg-deb -b pkg demo.deb >/dev/null \
           && dpkg-deb -x demo.deb installed && dpkg-deb -x demo.deb installed ;;
    cargo) cargo new -q --vcs none app-$i && cd app-$i && cargo build -q --offline && echo '// edited' >>src/main.rs && cargo build -q --offline ;;
    editor) python3 - <<'EOF'
import os, glob
for p in sorted(glob.glob('src/**/*.txt', recursive=True))[:200]:
    text = open(p).read() + 'Signed, A.\n'
    tmp = os.path.join(os.path.dirname(p), '.' + os.path.basename(p) + '.swp')
    with open(tmp, 'w') as f: f.write(text)
    os.rename(tmp, p)
EOF
    ;;
    office) python3 - <<'EOF'
import os, glob, zipfile
for p in sorted(glob.glob('src/**/*.docx', recursive=True))[:100]:
    d, n = os.path.dirname(p), os.path.basename(p)
    lock = os.path.join(d, '.~lock.' + n + '#')
    open(lock, 'w').write('user,host,2026')
    with zipfile.ZipFile(p) as z: parts = {i: z.read(i) for i in z.namelist()}
    tmp = os.path.join(d, '.' + n + '.tmp')
    with zipfile.ZipFile(tmp, 'w', zipfile.ZIP_DEFLATED) as z:
        for k, v in parts.items(): z.writestr(k, v + (b' ' if k.endswith('.xml') else b''))
    os.rename(tmp, p)
    os.remove(lock)
EOF
    ;;
    gpg) export GNUPGHOME; GNUPGHOME=$(mktemp -d) \
           && f=$(find src -name '*.pdf' -print -quit) \
           && gpg --batch --yes --pinentry-mode loopback --passphrase secret --symmetric -o "$f.gpg" "$f" \
           && rm -rf "$GNUPGHOME" ;;
    *) echo "unknown workload $1" >&2; return 2 ;;
  esac
}
declare -A took held
failed=()
# waits until the protection has judged every change so far (a tree just unpacked gives
# thousands), at most a minute; the same pause without the agent
settle() {
  if [ "$mode" = on ]; then
    for _ in $(seq 1 600); do
      [ "$(r ransomware status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["backlog"])')" = 0 ] && break
      sleep 0.1
    done
  fi
  sleep 2
}
# what the protection did so far: opens held, their waits in all (ms), permission events, lease
# breaks and their writers' waits in all (ms), and the agent's CPU time (ms, every thread)
held_now() {
  r ransomware status --json | AGENT="$root/var/lib/rampart/agent/status.json" python3 -c '
import json, os, sys
s = json.load(sys.stdin)
pid = json.load(open(os.environ["AGENT"]))["pid"]
f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
cpu = (int(f[11]) + int(f[12])) * 1000 // os.sysconf("SC_CLK_TCK")
print(s["held"]["opens"], s["held"]["ms"], s["calm"]["permission_events"], s["calm"]["lease_breaks"], s["calm"].get("lease_break_ms", 0), cpu)'
}
run_workloads() { # MODE BASE
  local mode=$1 base=$2 w d s e h0 h1
  for w in $WORKLOADS; do
    d=$base/$w-$mode-$round
    # every timing starts from the same page cache (before its tree is unpacked, so its input
    # is cached as on any host): kept, the trees and archives of the timings before slowed the
    # next — the same unprotected `tar` workload, run again and again, took 2.5 s, then more
    # each time up to 4.2 s; with the cache dropped first, 2.46–2.52 s five times in a row. The
    # bench's rounds ran as many as 13 workloads' halves in a row, unprotected or protected
    sync
    echo 3 >/proc/sys/vm/drop_caches
    mkdir -p "$d/src"
    # a protection that hinders the unpacking fails the run, not the bench (run 1035Z: GNU tar's
    # non-blocking open of a file the judge had just guarded — see holds::BEING_MADE_FOR)
    if ! tar -C "$d/src" -xf "$work/corpus.tar" 2>>"$out/workload-$w-$mode-$round.log"; then
      failed+=("unpacking the corpus for $w ($mode, round $round)")
    fi
    # the documents exist before the work starts, as on any host: the protection has taken in
    # the new tree (the same pause without it)
    sync
    settle
    [ "$mode" = on ] && h0=$(held_now)
    # PERF=1: where the agent spends its time during each protected workload (perf report -i);
    # PERF=system: where everything does
    perf_pid=
    if [ "$mode" = on ] && [ "${PERF:-0}" != 0 ]; then
      if [ "$PERF" = system ]; then who=(-a); else who=(-p "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$root/var/lib/rampart/agent/status.json")"); fi
      perf record -q -g -o "$out/perf-$w-$round.data" "${who[@]}" >/dev/null 2>&1 &
      perf_pid=$!
      sleep 0.5
    fi
    s=$(date +%s.%N)
    if ! (for i in $(seq 1 "$REPEAT"); do workload "$w" "$d" "$i" || exit 1; done) >"$out/workload-$w-$mode-$round.log" 2>&1; then
      failed+=("$w ($mode, round $round)")
    fi
    e=$(date +%s.%N)
    if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true; fi
    took[$w,$mode]+="$(python3 -c "print($e - $s)") "
    if [ "$mode" = on ]; then
      h1=$(held_now)
      held[$w]+="$(python3 -c "a, b = '$h0'.split(), '$h1'.split(); d = [int(y) - int(x) for x, y in zip(a, b)]; print(f'{d[0]}/{d[1]}, {d[2]}/{d[3]}/{d[4]}, {d[5]}')"); "
    fi
    "$work/bench-rm" -rf "$d"
  done
}

policy /bench/benign
mkdir -p "$root/bench/benign"
wait_protected /bench/benign
before_benign=$(incidents)
agent_down() {
  RAMPART_UNLOAD_PASSWORD=$password r agent unload >/dev/null
  r down >/dev/null 2>&1
  mkdir -p "$work/plain"
}
agent_up() {
  r up --detach --listen "127.0.0.1:$port" >>"$out/up.log" 2>&1
  wait_protected /bench/benign
}
# the order alternates from round to round (protected first, then without the agent first), so
# that whatever the first half leaves behind (dirty pages, a warm cache) weighs on both sides
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then
    echo "benign round $round/$ROUNDS: protected" >&2
    run_workloads on "$root/bench/benign"
    echo "benign round $round/$ROUNDS: no agent" >&2
    agent_down
    run_workloads off "$work/plain"
  else
    echo "benign round $round/$ROUNDS: no agent" >&2
    run_workloads off "$work/plain"
    echo "benign round $round/$ROUNDS: protected" >&2
    agent_up
    run_workloads on "$root/bench/benign"
  fi
done
[ $((ROUNDS % 2)) = 1 ] && agent_up
false_convictions=$(( $(incidents) - before_benign ))
r ransomware incidents --json >"$out/incidents.json"

# --- the table -------------------------------------------------------------------------------
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
{
  echo "Ransomware protection, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, kernel $(uname -r): $total documents, $ROUNDS rounds per family and workload"
  echo
  echo "| family | changed before conviction (median / max) | first change → conviction (median / max) | documents lost | files left behind | rounds convicted |"
  echo "|---|---:|---:|---:|---:|---:|"
  for family in $FAMILIES; do
    FAMILY=$family python3 - "$out/detection.tsv" <<'EOF'
import os, statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.split("\t")[0] == os.environ["FAMILY"]]
convicted = [r for r in rows if r[2] != "none"]
changed = [int(r[3]) for r in convicted] or [0]
ms = [int(r[4]) for r in convicted] or [0]
lost = sum(int(r[5]) for r in rows)
left = sum(int(r[6]) for r in rows)
print(f"| {os.environ['FAMILY']} | {statistics.median(changed):g} / {max(changed)} | {statistics.median(ms):g} ms / {max(ms)} ms | {lost} | {left} | {len(convicted)}/{len(rows)} |")
EOF
  done
  echo
  echo "Benign workloads: $false_convictions false conviction(s); ${#failed[@]} failed run(s)${failed:+: ${failed[*]}}"
  echo
  echo "Each timing runs its workload $REPEAT time(s) in a row; ratio = median protected / median without; spread = the lowest and highest ratio of one round's pair"
  echo
  echo "| workload | no agent | protected | ratio | spread | rounds, no agent / protected (s) | per protected round: opens held / ms waited, permission events / lease breaks / ms their writers waited, agent CPU ms |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for w in $WORKLOADS; do
    off=$(echo "${took[$w,off]}" | median)
    on=$(echo "${took[$w,on]}" | median)
    # the spread (lowest and highest ratio of one round's pair) and each round's times
    rounds=$(python3 -c "import sys; p = [(float(x), float(y)) for x, y in zip(sys.argv[1].split(), sys.argv[2].split())]; r = [y / x for x, y in p]; print(f'{min(r):.3f}–{max(r):.3f} | ' + ' '.join(f'{x:.2f}/{y:.2f}' for x, y in p))" "${took[$w,off]}" "${took[$w,on]}")
    printf '| %s | %.3f s | %.3f s | %.3f× | %s | %s |\n' "$w" "$off" "$on" "$(python3 -c "print($on / $off)")" "$rounds" "${held[$w]%; }"
  done
} | tee "$out/table.md"
echo "results in $out" >&2
[ "$false_convictions" = 0 ] && [ ${#failed[@]} = 0 ]
