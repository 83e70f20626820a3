#!/usr/bin/env bash
# Runs a program inside a QEMU guest booted from a stock Debian kernel, and returns its exit code.
#
# Why: the kernel tier of self-protection is a set of BPF LSM programs. Some kernels (the one our
# own machines and CI run) list `bpf` as an LSM yet refuse to load LSM programs; a stock Debian
# kernel loads and enforces them. This script boots one under TCG (software emulation), runs the
# given program as PID 1's child with proc, sysfs, devtmpfs, securityfs, bpffs and tmpfs mounted,
# and powers off. About 5-9 s a cycle.
#
# Usage: vm/run.sh [--file HOST_PATH[:GUEST_PATH]]... -- PROGRAM [ARGS...]
#   PROGRAM and every --file are copied into the guest with the shared libraries they need.
#   Environment: RAMPART_VM_CACHE (default: target/vm), RAMPART_VM_TIMEOUT (default 300 s),
#   RAMPART_VM_MEMORY (default 1024 MiB).
# Exit code: the program's; 124 on timeout; 125 if the guest crashed before reporting.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${RAMPART_VM_CACHE:-$here/../target/vm}
timeout_s=${RAMPART_VM_TIMEOUT:-900}
memory=${RAMPART_VM_MEMORY:-1024}

files=()
while [ $# -gt 0 ]; do
  case "$1" in
    --file) files+=("$2"); shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { echo "usage: $0 [--file HOST[:GUEST]]... -- PROGRAM [ARGS...]" >&2; exit 2; }
program=$1; shift

kernel=$("$here/kernel.sh")
for tool in qemu-system-x86_64 cpio gzip; do
  command -v "$tool" >/dev/null || { echo "vm: $tool is missing; run scripts/install-deps.sh" >&2; exit 2; }
done
busybox=/bin/busybox
[ -x "$busybox" ] && ! ldd "$busybox" >/dev/null 2>&1 \
  || { echo "vm: static busybox is missing (Debian package busybox-static)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,run,mnt,root,usr/bin,usr/sbin,lib,lib64}
cp "$busybox" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done

# copy FILE to GUEST path with the shared libraries ldd names
add() {
  local src=$1 dst=$2
  mkdir -p "$root$(dirname "$dst")"
  cp -L "$src" "$root$dst"
  # debug information only makes the image larger
  if [ "$(head -c 4 "$src" | tail -c 3)" = "ELF" ]; then
    objcopy --strip-debug "$root$dst" 2>/dev/null || true
    ldd "$src" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
      [ -e "$root$lib" ] || { mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; }
    done
  fi
}
add "$program" /test/program
for f in "${files[@]}"; do
  src=${f%%:*}; dst=${f#*:}; [ "$dst" = "$f" ] && dst=/test/$(basename "$src")
  add "$src" "$dst"
done

args=""
for a in "$@"; do args="$args '${a//\'/\'\\\'\'}'"; done
cat > "$root/init" <<INIT
#!/bin/busybox sh
export PATH=/test:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs securityfs /sys/kernel/security
mount -t bpf bpf /sys/fs/bpf
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
hostname rampart-vm
ip link set lo up
[ -x /test/rampart ] && export RAMPART_BIN=/test/rampart
cd /test
echo "RAMPART-VM-START lsm=\$(cat /sys/kernel/security/lsm)"
/test/program$args
echo "RAMPART-VM-EXIT \$?"
sync
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd.gz"

log=$work/serial.log
set +e
timeout "$timeout_s" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -m "$memory" -smp 2 \
  -nographic -no-reboot -nic none -kernel "$kernel" -initrd "$work/initrd.gz" \
  -append "console=ttyS0 lsm=landlock,lockdown,yama,integrity,bpf panic=-1 quiet" \
  </dev/null >"$log" 2>&1
qemu_rc=$?
set -e
# the guest's own output, without kernel messages
tr -d '\r' < "$log" | sed 's/^.*RAMPART-VM-START/RAMPART-VM-START/' | grep -v '^\[' \
  | sed -n '/^RAMPART-VM-START/,$p' | grep -v '^RAMPART-VM-EXIT' || true
code=$(tr -d '\r' < "$log" | sed -n 's/^RAMPART-VM-EXIT \([0-9]*\)$/\1/p' | tail -n 1)
if [ -n "$code" ]; then
  exit "$code"
fi
if [ "$qemu_rc" -eq 124 ]; then
  echo "vm: the guest did not finish within $timeout_s s" >&2
  exit 124
fi
echo "vm: the guest ended without reporting an exit code (crash?); serial log tail:" >&2
tail -n 40 "$log" >&2
exit 125
