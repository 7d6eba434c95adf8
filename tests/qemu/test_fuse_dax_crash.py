# SPDX-License-Identifier: Apache-2.0
"""The CONFIG_FUSE_DAX eviction crash, reproduced without tagmem (manual).

Why: tagmemfs links `data` to a node on its own tmpfs instead of serving a
character inode itself, because evicting a FUSE inode that a device-dax
device was opened through crashes the kernel (docs/fuse-dax-crash.md). This
test keeps that claim checkable on each kernel flavor (TAGMEM_QEMU_KERNEL):
tools/fuse_dax_repro.c, a 100-line libfuse lowlevel filesystem whose only
file is a char node with the dax device's number, is mounted
(dev,allow_other,default_permissions); the node is opened and mapped, then the
inode is evicted (drop_caches), then the filesystem is unmounted.

It asserts what is seen: the guest kernel oopses in fuse_evict_inode ->
fuse_dax_inode_cleanup when the inode is evicted (6.12: at drop_caches; 7.2:
at the unmount). If a kernel stops crashing, this test
fails and says so: then the design note and docs/fuse-dax-crash.md need
updating, not tagmemfs. It is not registered in CTest: a crashing guest
proves nothing about tagmem, and a kernel fix upstream must not turn CI red.

    TAGMEM_QEMU_KERNEL=unstable /usr/bin/python3 -m pytest -p no:cacheprovider \
        tests/qemu/test_fuse_dax_crash.py
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import vmkit

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "tools" / "fuse_dax_repro.c"
TAG = "fdfdfdfd-0009-4000-8000-0000000000fd"

SCENARIO = f"""
DEV=$(vmkit_dax_for_tag {TAG})
set -- $(stat -c '%t %T' $DEV)
MAJ=$((0x$1)); MIN=$((0x$2))
mkdir -p /mnt/repro
fuse_dax_repro /mnt/repro $MAJ $MIN &
REPRO=$!
i=0
until grep -q ' /mnt/repro .* - fuse ' /proc/self/mountinfo; do
    i=$((i + 1)); [ $i -lt 200 ] || exit 1; sleep 0.05
done
vmkit_section node stat -c '%F %t:%T %a' /mnt/repro/dax
echo "REPRO-STEP: open+mmap"
daxmap write /mnt/repro/dax 0x5eed 2M
echo "REPRO-STEP: evict (drop_caches)"
sync
echo 2 >/proc/sys/vm/drop_caches
sleep 1
echo "REPRO-STEP: unmount"
kill -TERM $REPRO
wait $REPRO || true
echo "REPRO-STEP: survived"
"""


def _repro_binary(cache_dir: Path) -> Path:
    """fuse_dax_repro compiled with cc against libfuse3, cached by source hash."""
    key = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    dst = cache_dir / "tools" / key / "fuse_dax_repro"
    if not dst.is_file():
        cc = shutil.which("cc") or shutil.which("gcc")
        if not cc:
            pytest.fail("no C compiler for tools/fuse_dax_repro.c")
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"],
                               capture_output=True, text=True, check=True).stdout.split()
        dst.parent.mkdir(parents=True, exist_ok=True)
        vmkit._run([cc, "-O2", "-Wall", "-Wextra", "-o", dst, SOURCE, *flags])
    return dst


def test_evicting_a_dax_opened_fuse_inode_crashes(vm_assets, guest_tools, vm_timings,
                                                 tmp_path):
    nv = vmkit.NvdimmSpec(vm_assets.cache_dir / "images" / "fusedax.img", "1G")
    vmkit.prepare_nvdimm(nv, [TAG], "256M", assets=vm_assets)
    repro = _repro_binary(vm_assets.cache_dir)
    initrd = vmkit.build_initramfs(
        tmp_path / "repro.cpio",
        [(str(repro), "/usr/local/bin/fuse_dax_repro"),
         (str(guest_tools["daxmap"]), "/usr/local/bin/daxmap")],
        scenario=SCENARIO, assets=vm_assets)
    res = vmkit.boot(initrd, [nv], timeout_s=180, name="fusedax",
                     log_path=tmp_path / "fusedax.log", assets=vm_assets)
    steps = re.findall(r"^REPRO-STEP: (.*)$", res.console, re.M)
    vm_timings[f"fuse-dax repro ({vm_assets.kver})"] = (
        f"steps {steps}; oops: {res.oops_summary or 'none'}")
    assert res.section("node").split()[:3] == ["character", "special", "file"], res.tail()
    assert "open+mmap" in steps and re.search(r"daxmap write: .* OK$", res.console, re.M), \
        f"the node did not open and map like the dax device\n{res.tail()}"
    if res.oops is None:
        pytest.fail(f"kernel {vm_assets.kver} no longer crashes when a dax-opened FUSE inode "
                    f"is evicted (steps {steps}): update docs/fuse-dax-crash.md")
    # The step during which it oopsed: 6.12 at drop_caches; 7.2 only at the
    # unmount (generic_shutdown_super shrinks the dcache while SB_ACTIVE is set).
    before = res.console[:res.console.find(res.oops.splitlines()[0])]
    at = re.findall(r"^REPRO-STEP: (.*)$", before, re.M)[-1]
    vm_timings[f"fuse-dax repro ({vm_assets.kver})"] += f"; oopsed during: {at}"
    assert at in ("evict (drop_caches)", "unmount"), f"crashed during {at!r}\n{res.oops}"
    assert re.search(r"fuse_dax_inode_cleanup\+.*\n(?:.*\n)*?.*fuse_evict_inode\+", res.oops), \
        res.oops
