#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""What a CDI spec of many tags costs the container engine (docs/containers.md).

Podman parses every spec file in /etc/cdi and /var/run/cdi at every
`podman run`, so the layout tagmemfs writes decides what each container start
costs. This times `podman run --device tagmem.io/tag=<one tag>` with the same
N devices laid out three ways: no other tag (one file of one device), N
per-tag files (what tagmemfs writes), and one file of N devices (what
`tagmem cdi` prints, and what tagmemfs wrote before per-tag files).

The specs have the shape of tagmemfs's (core/cdi.cpp): two device nodes, the
tag directory bound read-only, three variables. The requested tag's node is a
real node (1:3, /dev/null's numbers) and its directory exists; the others are
only parsed, as on a host where a container asks for one tag of many.

Needs root, podman and runc (scripts/install-deps.sh). Not run by CI:
  bench/cdi_podman.py [--tags 10000] [--runs 5]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

KIND = "tagmem.io/tag"
IMAGE = "localhost/tagmem-cdi-bench:1"
RUN = ["--runtime", "runc"]
RUN_OPTS = ["--rm", "--network", "none", "--ulimit", "nofile=20000:20000", "--ulimit",
            "nproc=4096:4096"]


def device(tag: str, minor: int, base: Path) -> dict:
    node = str(base / "nodes" / tag)
    tag_dir = str(base / "tags" / tag)
    edits = {
        "deviceNodes": [{"path": node, "type": "c", "major": 1 if minor < 0 else 252,
                         "minor": 3 if minor < 0 else minor, "fileMode": 0o600, "uid": 0,
                         "gid": 0, "permissions": "rw"}],
        "mounts": [{"hostPath": tag_dir, "containerPath": tag_dir,
                    "options": ["bind", "ro", "nosuid", "nodev"]}],
        "env": [f"TAGMEM_TAG={tag}", f"TAGMEM_DIR={tag_dir}", f"TAGMEM_DATA={tag_dir}/data"],
    }
    return {"name": tag, "containerEdits": edits}


def spec(devices: list[dict]) -> str:
    return json.dumps({"cdiVersion": "0.5.0", "kind": KIND, "devices": devices})


def podman(cdi_dir: Path | None, *args: str) -> subprocess.CompletedProcess:
    # Our CDI directory as /run/cdi, in a mount namespace of its own.
    script = "set -e; "
    if cdi_dir is not None:
        script += f"mkdir -p /run/cdi; mount --bind '{cdi_dir}' /run/cdi; "
    script += 'exec "$@"'
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                           "podman", "podman", *RUN, *args], capture_output=True, text=True,
                          timeout=600)


def timed_runs(cdi_dir: Path, tag: str, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = podman(cdi_dir, "run", *RUN_OPTS, "--device", f"{KIND}={tag}", IMAGE, "/bin/true")
        out.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise RuntimeError(f"podman run failed: {r.stderr.strip()[-500:]}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tags", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tagmem-cdi-bench-") as tmp:
        base = Path(tmp)
        root = base / "rootfs"
        (root / "bin").mkdir(parents=True)
        shutil.copy("/bin/busybox", root / "bin" / "busybox")
        (root / "bin" / "true").symlink_to("busybox")
        with tarfile.open(base / "rootfs.tar", "w") as t:
            t.add(root, arcname=".")
        r = podman(None, "import", str(base / "rootfs.tar"), IMAGE)
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        tags = [str(uuid.UUID(int=(0x6F1C << 112) + i)) for i in range(args.tags)]
        wanted = tags[0]
        (base / "nodes").mkdir()
        (base / "tags" / wanted).mkdir(parents=True)
        os.mknod(base / "nodes" / wanted, 0o20600, os.makedev(1, 3))
        devs = [device(t, -1 if t == wanted else i % 1024, base) for i, t in enumerate(tags)]
        layouts = {"one tag": base / "one", "per-tag files": base / "per-tag",
                   "one file of all": base / "single"}
        for d in layouts.values():
            d.mkdir()
        (layouts["one tag"] / "tagmem.json").write_text(spec([devs[0]]))
        for t, dv in zip(tags, devs):
            (layouts["per-tag files"] / f"tagmem-{t}.json").write_text(spec([dv]))
        (layouts["one file of all"] / "tagmem.json").write_text(spec(devs))
        print(f"podman run --device {KIND}=<one tag>, {args.tags} tags, {args.runs} runs each")
        print("| layout | files | bytes | median s | min s |")
        print("|---|---|---|---|---|")
        try:
            for name, d in layouts.items():
                files = list(d.iterdir())
                size = sum(f.stat().st_size for f in files)
                secs = timed_runs(d, wanted, args.runs)
                print(f"| {name} | {len(files)} | {size:,} | {statistics.median(secs):.2f} | "
                      f"{min(secs):.2f} |", flush=True)
        finally:
            podman(None, "rmi", "-f", IMAGE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
