#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The tagmemfs soak test: an hour (--duration) of tag churn at 10,000 tags
# (--tags) with readers, watchers and abusive clients; writes docs/soak.md and
# docs/soak.csv. Needs root. Options: `bench/soak.py --help`. Not run by CI.
# Debian's interpreter, whatever python3 comes first in PATH.
exec /usr/bin/python3 "$(dirname "$0")/soak.py" "$@"
