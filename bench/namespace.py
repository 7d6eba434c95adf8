# SPDX-License-Identifier: Apache-2.0
"""The benchmarks run in a private mount and network namespace of their own
(synthetic hosts over /sys and /dev, a tmpfs /run, fake udev events), so they
re-execute themselves under unshare(1) once, as root."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def enter_private_namespace(script: str, inner_env: str) -> None:
    """Re-executes `script` with the same arguments in new mount and network
    namespaces, unless this process already runs there (inner_env set by the
    re-execution, and a mount namespace other than the parent's)."""
    if os.environ.get(inner_env) == "1" and (
            os.stat("/proc/self/ns/mnt").st_ino != os.stat(f"/proc/{os.getppid()}/ns/mnt").st_ino):
        return
    name = Path(script).name
    if os.geteuid() != 0:
        sys.exit(f"bench/{name} needs root (mount namespaces, FUSE, mknod)")
    os.environ[inner_env] = "1"
    argv = ["unshare", "--mount", "--net", "--propagation", "private", sys.executable,
            str(Path(script).resolve()), *sys.argv[1:]]
    os.execvp(argv[0], argv)
