#!/usr/bin/env bash
# Prints the path of a stock Debian kernel for the QEMU guest, downloading it once into the
# cache (RAMPART_VM_CACHE, default target/vm) from Debian's package archive.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${RAMPART_VM_CACHE:-$here/../target/vm}
mkdir -p "$cache"
existing=$(ls "$cache"/kernel/boot/vmlinuz-* 2>/dev/null | head -n 1 || true)
if [ -n "$existing" ]; then
  echo "$existing"
  exit 0
fi
pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | sed -n 's/.*Depends: \(linux-image-[0-9].*\)/\1/p' | head -n 1)
if [ -z "$pkg" ]; then
  echo "vm: cannot resolve linux-image-cloud-amd64 (run apt-get update)" >&2
  exit 2
fi
(cd "$cache" && apt-get download -qq "$pkg" >/dev/null 2>&1) || {
  echo "vm: apt-get download $pkg failed" >&2
  exit 2
}
rm -rf "$cache/kernel"
dpkg -x "$cache"/"$pkg"_*.deb "$cache/kernel"
rm -f "$cache"/"$pkg"_*.deb
ls "$cache"/kernel/boot/vmlinuz-* | head -n 1
