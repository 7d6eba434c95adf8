#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The tests again under sanitizers, and a short run of every fuzzer; called by
# scripts/test.sh after the main CTest run. Each pass has a build directory of
# its own (build-asan, build-tsan, build-fuzz, or under TAGMEM_SANITIZER_BUILD_ROOT):
#
#   asan  ASan+UBSan: the unit tests and every integration suite (the CLI and
#         tagmemfs started by the Python tests are instrumented too).
#   tsan  TSan: the unit tests and the FUSE and hotplug suites, where tagmemfs
#         runs its FUSE worker pool, its event thread and, at each rescan, the
#         read-ahead thread of the scan.
#   fuzz  every libFuzzer target (fuzz/) for TAGMEM_FUZZ_SECONDS (default 10) each.
#
# Not here: the QEMU guests (statically linked guest tools, emulated CPUs) and
# the benchmarks (timings of instrumented code mean nothing).
#
# Any sanitizer report fails the pass: the runtimes halt at the first one with
# exit code 66, and also write it to a file under <build>/sanitizer-reports,
# which this script and the pytest harness (tests/integration/conftest.py)
# check, so that a report from a process whose exit status nobody looks at
# (a daemon stopped by a test) still counts.
#
# Usage: scripts/test-sanitizers.sh [asan] [tsan] [fuzz]   (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

passes=("$@")
((${#passes[@]})) || passes=(asan tsan fuzz)
build_root=${TAGMEM_SANITIZER_BUILD_ROOT:-.}
jobs=$(nproc)
symbolizer=$(command -v llvm-symbolizer-14 || command -v llvm-symbolizer || true)
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
fi

# What the tests run (not tagmem-bench: no benchmarks here).
# old_kernel_shim: preloaded into tagmemfs by test_fs.py (a kernel without no-open);
# fault_shim: by test_faults.py (a failing eventfd or sigaction);
# host_pidns_shim and hostile_fuse: by test_online.py (tagmem online in a PID
# namespace of its own as if in the host's; a user's hostile FUSE server).
test_targets=(tagmemfs tagmem tagmem_unit_tests old_kernel_shim fault_shim host_pidns_shim
  hostile_fuse)

log() { echo "test-sanitizers: $*" >&2; }

configure_and_build() { # dir, cmake args..., -- targets...
  local dir=$1
  shift
  local args=() targets=()
  while (($#)) && [[ $1 != -- ]]; do args+=("$1"); shift; done
  shift || true
  targets=("$@")
  cmake -S "$root" -B "$dir" -DTAGMEM_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    "${launcher[@]}" "${args[@]}" >/dev/null
  cmake --build "$dir" -j"$jobs" ${targets[@]+--target "${targets[@]}"}
}

# Fails when any runtime wrote a report (the files are named <prefix>.<pid>).
check_reports() { # dir
  local reports=("$1"/sanitizer-reports/report.*)
  [[ -e ${reports[0]} ]] || return 0
  log "sanitizer reports in $1/sanitizer-reports:"
  for r in "${reports[@]}"; do
    echo "==== $r" >&2
    head -n 80 "$r" >&2
  done
  return 1
}

sanitizer_env() { # dir
  local reports=$1/sanitizer-reports
  rm -rf "$reports"
  mkdir -p "$reports"
  local common="halt_on_error=1:exitcode=66:log_path=$reports/report:print_stacktrace=1"
  export TAGMEM_SANITIZER_LOG_DIR=$reports
  export ASAN_OPTIONS="$common:detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1"
  export UBSAN_OPTIONS="$common"
  export LSAN_OPTIONS="suppressions=$root/scripts/sanitizers/lsan.supp:print_suppressions=0"
  export TSAN_OPTIONS="$common:second_deadlock_stack=1:suppressions=$root/scripts/sanitizers/tsan.supp:print_suppressions=0"
  if [[ -n $symbolizer ]]; then
    export ASAN_SYMBOLIZER_PATH=$symbolizer
    export ASAN_OPTIONS="$ASAN_OPTIONS:external_symbolizer_path=$symbolizer"
    export TSAN_OPTIONS="$TSAN_OPTIONS:external_symbolizer_path=$symbolizer"
    export UBSAN_OPTIONS="$UBSAN_OPTIONS:external_symbolizer_path=$symbolizer"
  fi
}

# CTest, then the reports. The reports are printed when CTest fails too: a
# test killed by a sanitizer shows no reason in its own output (log_path sends
# the report to a file), so without this a failed pass would not say why.
ctest_then_reports() { # ctest args...
  local rc=0
  ctest "$@" || rc=$?
  check_reports . || rc=1
  return "$rc"
}

run_pass() { # name, seconds spent are printed
  local t0=$SECONDS
  "pass_$1"
  log "$1 passed in $((SECONDS - t0)) s"
}

pass_asan() {
  local dir=$build_root/build-asan
  configure_and_build "$dir" -DTAGMEM_SANITIZE=address,undefined -- "${test_targets[@]}"
  (
    sanitizer_env "$(realpath "$dir")"
    cd "$dir"
    # clang_format and synthetic_hostgen run no C++ of ours: the main pass has them.
    ctest_then_reports --output-on-failure --timeout 3000 -E '^(clang_format|synthetic_hostgen)$'
  )
}

pass_tsan() {
  local dir=$build_root/build-tsan
  configure_and_build "$dir" -DTAGMEM_SANITIZE=thread -- "${test_targets[@]}"
  (
    sanitizer_env "$(realpath "$dir")"
    cd "$dir"
    ctest_then_reports --output-on-failure --timeout 3000 \
      -E '^(clang_format|synthetic_hostgen|integration_discovery|integration_cli)$'
  )
}

pass_fuzz() {
  local dir=$build_root/build-fuzz
  if ! command -v clang++ >/dev/null; then
    log "clang++ is missing (scripts/install-deps.sh installs it)"
    return 1
  fi
  CC=clang CXX=clang++ configure_and_build "$dir" -DTAGMEM_FUZZ=ON \
    -DTAGMEM_FUZZ_SECONDS="${TAGMEM_FUZZ_SECONDS:-10}" -- fuzz_targets
  (
    if [[ -n $symbolizer ]]; then export ASAN_SYMBOLIZER_PATH=$symbolizer; fi
    export ASAN_OPTIONS=detect_leaks=1
    export UBSAN_OPTIONS=print_stacktrace=1
    cd "$dir"
    # libFuzzer stops at the first crash, sanitizer report or leak and exits nonzero.
    ctest --output-on-failure -L fuzz
  )
}

for p in "${passes[@]}"; do
  case $p in
  asan | tsan | fuzz) run_pass "$p" ;;
  *) log "unknown pass '$p' (asan, tsan, fuzz)"; exit 2 ;;
  esac
done
