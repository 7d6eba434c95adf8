#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Runs every tagmem benchmark and writes docs/benchmarks.md and docs/benchmarks.json.
# Needs root. Options: see `bench/run.py --help` (--smoke, --sizes, --skip-qemu, ...).
# Debian's interpreter, whatever python3 comes first in PATH.
exec /usr/bin/python3 "$(dirname "$0")/run.py" "$@"
