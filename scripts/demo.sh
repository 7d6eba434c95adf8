#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The tagmem demo. Part 0 (issue 17), when a guest kernel with CXL Dynamic
# Capacity and a QEMU whose extents carry tags are present (TAGMEM_DCD_KERNEL,
# TAGMEM_DCD_QEMU; docs/dcd.md), else skipped with a note: two emulated hosts
# whose CXL devices' dynamic capacity is one file are each given the same
# tagged extent over QMP while tagmemfs runs; both find it by its tag and
# exchange messages through it. --no-dcd skips part 0.
# Then: two emulated hosts (QEMU guests) share one memory device
# and find the same allocation by its tag, though their /dev/daxX.Y names
# differ; they then exchange messages through /run/tagmem/<tag>/data.
# Part 2 (issue 12): this machine hands one tag to two VMs with the arguments
# `tagmem vm-args` makes; each VM's tagmem finds it by the same tag with the
# host's metadata, they exchange messages through data, and the host finds
# the same bytes in its file (a plain file stands in for the tag's data).
# --no-handoff skips part 2.
#
# Needs root on Debian 12 (apt, QEMU). Installs what is missing, builds
# tagmem and tagmemfs into ./build (or $TAGMEM_BUILD_DIR), then runs
# tests/qemu/demo.py. The first run also fetches a Debian kernel for the
# guests (cached in <build>/qemu-cache). Usage: scripts/demo.sh [--rounds N]
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s.%N)
build=${TAGMEM_BUILD_DIR:-build}
bold() { if [[ -t 1 ]]; then printf '\033[1m%s\033[0m\n' "$*"; else printf '%s\n' "$*"; fi; }

bold "== Dependencies (apt; skipped when present)"
./scripts/install-deps.sh

bold "== Building tagmem and tagmemfs into $build"
mkdir -p "$build"
log="$build/demo-build.log"
t0=$(date +%s)
# Only what the demo runs: the full build (unit tests...) is scripts/test.sh's job.
if ! { cmake -S . -B "$build" && cmake --build "$build" -j"$(nproc)" --target tagmem tagmemfs; } \
    >"$log" 2>&1; then
  tail -n 40 "$log"
  echo "demo: the build failed (full log: $log)" >&2
  exit 1
fi
echo "built in $(($(date +%s) - t0))s ($build/cli/tagmem, $build/fs/tagmemfs; log: $log)"

export TAGMEM_BUILD_DIR
TAGMEM_BUILD_DIR=$(cd "$build" && pwd)
# Debian's interpreter, whatever python3 comes first in PATH.
exec /usr/bin/python3 tests/qemu/demo.py --build "$TAGMEM_BUILD_DIR" --started "$started" "$@"
