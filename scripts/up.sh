#!/usr/bin/env bash
# The main job on a fresh Debian machine, as root: installs what is missing, builds Rampart,
# and runs `rampart up`: the management server with its embedded store, a local agent enrolled
# to it, and the console URL. Extra arguments go to `rampart up` (e.g. --detach, --listen).
# RAMPART_ROOT=/some/prefix keeps every file Rampart writes below that folder.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --for up
echo "rampart: building (release) ..."
cargo build --release --locked -p rampart-cli
exec target/release/rampart --root "${RAMPART_ROOT:-/}" up "$@"
