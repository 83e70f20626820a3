#!/usr/bin/env bash
# Installs the Debian packages Rampart's build, its main job and its tests need, if missing.
# Idempotent: a machine that has them all is left alone (no apt-get update).
# Usage: scripts/install-deps.sh [--for up|test]
set -euo pipefail

purpose=${2:-test}
[ "${1:-}" = "--for" ] || purpose=test

# Build: a C toolchain for crates with C parts (ring, sqlite, libbpf), pkg-config; clang,
# bpftool and libelf for the kernel tier's BPF programs.
packages=(build-essential pkg-config ca-certificates clang llvm bpftool libelf-dev zlib1g-dev)
if [ "$purpose" = test ]; then
  # The PostgreSQL store is tested against a real PostgreSQL server.
  packages+=(postgresql postgresql-client)
  # The kernel tier is tested in a QEMU guest with a stock Debian kernel (vm/run.sh), attacked
  # with real tools: busybox and the ones it lacks.
  packages+=(qemu-system-x86 busybox-static cpio attr strace procps e2fsprogs)
  # Ransomware protection is tested against the everyday work it must let through (archivers,
  # git, rsync, SQLite, ImageMagick, gpg, an interpreter) and benchmarked on real formats.
  packages+=(zstd zip unzip git rsync sqlite3 imagemagick gnupg python3 file openssl)
  # bench/syscall-time.sh: where a workload's time goes, system call by system call.
  packages+=(bpftrace)
  # The vault's reflinks are tested on an XFS filesystem in a file of the test's own.
  packages+=(xfsprogs)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "rampart: missing Debian packages: ${missing[*]}; run this as root (or install them)" >&2
    exit 1
  fi
  echo "rampart: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  for c in "$HOME/.cargo/bin/cargo" /usr/local/cargo/bin/cargo; do
    [ -x "$c" ] && { echo "rampart: cargo is at $c; add $(dirname "$c") to PATH" >&2; exit 1; }
  done
  echo "rampart: the Rust toolchain (cargo) is missing; install it with rustup, then run this again" >&2
  exit 1
fi
