#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs every test of tagmem: installs the dependencies (apt), builds with
# warnings as errors, then runs CTest: unit tests, discovery on synthetic
# hosts, real FUSE mounts of tagmemfs, and real devdax devices in QEMU guests.
# Then the unit and integration tests again under ASan+UBSan and TSan, and a
# short run of every fuzzer (scripts/test-sanitizers.sh).
# Needs root (mount namespaces, FUSE, mknod). Usage: scripts/test.sh [ctest args]
# With ctest arguments (a selection of tests), the sanitizer pass is left out
# unless TAGMEM_SANITIZERS=1; TAGMEM_SANITIZERS=0 always leaves it out.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
build=${TAGMEM_BUILD_DIR:-build}
cmake -S . -B "$build" -DTAGMEM_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)"
(cd "$build" && ctest --output-on-failure --timeout 3000 "$@")
if [[ "${TAGMEM_SANITIZERS:-$((!$#))}" == 1 ]]; then
  ./scripts/test-sanitizers.sh
fi
