#!/usr/bin/env bash
# What an idle Rampart costs the host: a real server and agent (`rampart up`, the agent
# protecting a folder of DOCS documents), left alone for SECONDS once it has taken the folder
# in; then, per process and per thread, the CPU time used (ms per second) and the times it was
# woken (voluntary context switches per second). Each wakeup of a thread costs tens of
# microseconds on a VM (the hypervisor's timer and the switch) besides its own work.
#
# Usage: bench/idle.sh       (SECONDS_IDLE=30 DOCS=2000 BENCH_TMP=/var/tmp; needs root;
#        RAMPART_BIN=PATH measures another build of `rampart`, an earlier commit's for instance)
# Results: target/bench-idle/DATE/ (table.md, threads.tsv).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_IDLE=${SECONDS_IDLE:-30}
DOCS=${DOCS:-2000}
cargo build --release --locked -p rampart-cli -p rampart-ransim >&2
bin=${RAMPART_BIN:-$PWD/target/release/rampart}
out=$PWD/target/bench-idle/$(date -u +%Y%m%dT%H%MZ)
mkdir -p "$out"
root=$(mktemp -d "${BENCH_TMP:-/var/tmp}/rampart-idle-root.XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
password="idle-bench-unload"
r() { "$bin" --root "$root" "$@"; }
cleanup() {
  if [ -e "$root/var/lib/rampart/agent/control.sock" ] || [ -e "$root/var/lib/rampart/server" ]; then
    RAMPART_UNLOAD_PASSWORD=$password r agent unload >/dev/null 2>&1 || true
    r down >/dev/null 2>&1 || true
  fi
  chattr -R -i "$root" 2>/dev/null || true
  rm -rf "$root"
}
trap cleanup EXIT

r up --detach --listen "127.0.0.1:$port" >"$out/up.log" 2>&1
mkdir -p "$root/docs"
target/release/rampart-ransim corpus "$root/docs" --count "$DOCS" --seed 1 >/dev/null
r policy set - >/dev/null <<JSON
{"unload": {"password": "$password"}, "ransomware": {"mode": "block", "folders": ["/docs"]}}
JSON
echo "waiting for the agent to protect /docs and take it in" >&2
for _ in $(seq 1 1200); do
  if r ransomware status --json 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
ok = s["folders"] == ["/docs"] and "folder(s) watched" in (s["status"].get("reason") or "") and s["backlog"] == 0
sys.exit(0 if ok else 1)'; then break; fi
  sleep 0.1
done
sleep 5
pids=$(pgrep -f "^$root/opt/rampart/bin/rampart " || true)
[ -n "$pids" ] || { echo "bench: no Rampart process found" >&2; exit 1; }
snap() {
  for p in $pids; do
    for t in /proc/"$p"/task/*; do
      printf '%s\t%s\t%s\t%s\t%s\n' "$p" "${t##*/}" "$(tr ' ' _ <"$t/comm")" \
        "$(awk '{print $14 + $15}' "$t/stat")" \
        "$(awk '/^voluntary_ctxt_switches/ {print $2}' "$t/status")"
    done
  done | sort
}
snap >"$out/before.tsv"
echo "measuring $SECONDS_IDLE s of idleness" >&2
sleep "$SECONDS_IDLE"
snap >"$out/after.tsv"
ROLE_OF=$(for p in $pids; do printf '%s=%s;' "$p" "$(tr '\0' ' ' </proc/"$p"/cmdline | awk '{print $4}')"; done)
ROLE_OF=$ROLE_OF SECONDS_IDLE=$SECONDS_IDLE DOCS=$DOCS python3 - "$out" <<'EOF'
import os, sys
out = sys.argv[1]
secs = float(os.environ["SECONDS_IDLE"])
tick = os.sysconf("SC_CLK_TCK")
roles = dict(kv.split("=", 1) for kv in os.environ["ROLE_OF"].split(";") if kv)
def load(name):
    rows = {}
    for line in open(os.path.join(out, name)):
        pid, tid, comm, cpu, sw = line.rstrip("\n").split("\t")
        rows[(pid, tid)] = (comm, int(cpu), int(sw))
    return rows
a, b = load("before.tsv"), load("after.tsv")
threads, procs = [], {}
for key in sorted(set(a) & set(b)):
    comm = b[key][0]
    cpu = (b[key][1] - a[key][1]) * 1000 / tick / secs
    wakes = (b[key][2] - a[key][2]) / secs
    role = roles.get(key[0], "?")
    threads.append((role, key[0], key[1], comm, cpu, wakes))
    p = procs.setdefault((role, key[0]), [0.0, 0.0])
    p[0] += cpu; p[1] += wakes
with open(os.path.join(out, "threads.tsv"), "w") as f:
    f.write("role\tpid\ttid\tthread\tcpu_ms_per_s\twakeups_per_s\n")
    for t in sorted(threads, key=lambda t: -t[5]):
        f.write("%s\t%s\t%s\t%s\t%.1f\t%.1f\n" % t)
with open(os.path.join(out, "table.md"), "w") as f:
    f.write(f"Idle Rampart, {secs:g} s, the agent protecting {os.environ['DOCS']} documents "
            f"(CPU from /proc in ticks of {1000 // tick} ms)\n\n")
    f.write("| process | CPU ms/s | wakeups/s |\n|---|---:|---:|\n")
    for (role, pid), (cpu, wakes) in sorted(procs.items()):
        f.write(f"| {role} ({pid}) | {cpu:.1f} | {wakes:.0f} |\n")
    f.write(f"| all | {sum(p[0] for p in procs.values()):.1f} | {sum(p[1] for p in procs.values()):.0f} |\n")
    f.write("\nMost wakeful threads:\n\n| process | thread | CPU ms/s | wakeups/s |\n|---|---|---:|---:|\n")
    for role, pid, tid, comm, cpu, wakes in sorted(threads, key=lambda t: -t[5])[:8]:
        f.write(f"| {role} | {comm} | {cpu:.1f} | {wakes:.0f} |\n")
print(open(os.path.join(out, "table.md")).read())
EOF
echo "results in $out" >&2
