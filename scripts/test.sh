#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs every test of tagmem: installs the dependencies (apt), builds with
# warnings as errors, then runs CTest: unit tests, discovery on synthetic
# hosts, real FUSE mounts of tagmemfs, and real devdax devices in QEMU guests.
# Needs root (mount namespaces, FUSE, mknod). Usage: scripts/test.sh [ctest args]
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
build=${TAGMEM_BUILD_DIR:-build}
cmake -S . -B "$build" -DTAGMEM_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)"
cd "$build"
exec ctest --output-on-failure --timeout 3000 "$@"
