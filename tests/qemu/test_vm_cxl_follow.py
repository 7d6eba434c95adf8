# SPDX-License-Identifier: Apache-2.0
"""vm-attach --follow with a guest (issue 18, docs/vm.md "Memory errors and
a tag that leaves the host"): a host memory error reaches the guest's tag
at the same offset, and a tag that leaves the host is asked back from the
guest, which sees it go.

Why: only a DCD guest under the tag-carrying QEMU shows that QEMU's poison
and release requests reach the guest's tagmem as the host's tagmem meant
them. The guest, its QEMU arguments and the skip rules are those of
test_vm_cxl.py (its `dcd` fixture and `start_guest`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import dcdkit
import tagmemvm
from tagmemvm import section, section_json
from test_vm_cxl import GUEST_TIMEOUT_S, SIZE, dcd, start_guest  # noqa: F401 (dcd: fixture)


T_NV = "c4c4c4c4-0018-4000-8000-0000000000c4"
NV_BASE = 0x20_0000_0000
BAD_OFF = 0x1340000  # into the tag's data: 19 MiB + 256 KiB
SECTOR = 512


def follow_scenario() -> str:
    return f"""
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
dcd_start_answers
tm_start
dcd_ask attach
tagmem wait {T_NV} --timeout 120
echo "TM-EVENT: tag ready uptime=$(tm_now)"
dcd_ask poison
# An injected error raises no event in the guest: its poison list is read
# at SIGHUP (docs/dcd.md).
kill -HUP $TM_PID
tm_section degraded tagmem wait --degraded {T_NV} --timeout 60
echo "TM-EVENT: tag degraded uptime=$(tm_now)"
tm_section meta-poisoned cat "$TM_MNT/{T_NV}/metadata"
# The tag leaves the host: the follower asks for it back; the guest's
# tagmemfs holds it (claimed), so the kernel defers and the guest is told.
dcd_ask vanish
tm_section release-requested tagmem wait --release-requested {T_NV} --timeout 60
tm_section meta-asked-back cat "$TM_MNT/{T_NV}/metadata"
tm_section unclaim tagmem unclaim {T_NV}
dcd_ask detach
for i in $(seq 600); do [ -e "$TM_MNT/{T_NV}" ] || break; sleep 0.1; done
[ -e "$TM_MNT/{T_NV}" ] && echo "TM-EVENT: tag still there" || echo "TM-EVENT: tag gone uptime=$(tm_now)"
tm_stop
"""


def test_vm_attach_follow_forwards_a_host_error(dcd, guest_tools, tmp_path):
    """The host's tagmemfs (on a synthetic host whose NVDIMM namespace is the
    tag) learns of a bad range from its region's badblocks; vm-attach
    --follow forwards it as poison; the guest's tagmem shows it at the same
    offset of the tag's data. Then the namespace takes another UUID: the
    follower asks the tag back, the guest (holding it claimed) is told
    (release-requested), lets go, and the next vm-detach takes it."""
    import os
    import signal
    import threading
    _, assets, product = dcd
    sys.path.insert(0, str(tagmemvm.REPO / "tests" / "synthetic"))
    import hostgen as hg
    h = hg.Host()
    region = h.nvdimm_region(1, NV_BASE, SIZE + hg.NVDIMM_DATA_OFFSET, target_node=1)
    region.namespace(0, T_NV, size=SIZE + hg.NVDIMM_DATA_OFFSET)
    root = tmp_path / "nv-host"
    h.write(root)
    build = tagmemvm.build_dir()
    tagmem = str(build / "cli" / "tagmem")
    gen = hg.run_in_host(root, [tagmem, "vm-args", "--cxl", "--format", "json", T_NV])
    assert gen.returncode == 0, gen.stderr
    backing = dcdkit.backing_file(tmp_path / "nv-data.img", SIZE)
    qemu_args = tagmemvm.with_backing_file(json.loads(gen.stdout)["qemu"], T_NV, backing)

    initrd = dcdkit.build_initrd(tmp_path / "initrd.gz", follow_scenario(), assets=assets,
                                 product=product, tools=guest_tools)
    guest, files = start_guest(dcd, qemu_args, backing, initrd, tmp_path, "vm-cxl-follow")

    # The host side, in one synthetic host: its tagmemfs, then the follower.
    mnt, pidfile = tmp_path / "host-mnt", tmp_path / "host-tagmemfs.pid"
    mnt.mkdir()
    script = (f"{build / 'fs' / 'tagmemfs'} -f --uevents none --no-cdi {mnt} "
              f">{tmp_path / 'host-tagmemfs.log'} 2>&1 & echo $! >{pidfile}; "
              f"for i in $(seq 100); do [ -S {mnt}.sock ] && break; sleep 0.1; done; "
              f"exec {tagmem} vm-attach --follow --qmp {files.qmp} --mount-point {mnt} {T_NV}")
    lines: list[str] = []
    follower: dict[str, subprocess.Popen] = {}

    def attach(_q):
        def run():
            p = subprocess.Popen(hg.host_argv(root, ["sh", "-c", script]),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 start_new_session=True)
            follower["p"] = p
            threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True).start()
            deadline = time.monotonic() + 30
            while not any("capacity offered" in ln for ln in lines):
                assert time.monotonic() < deadline and p.poll() is None, "".join(lines)
                time.sleep(0.1)
        return run

    def poison(_q):
        def run():
            sector = (NV_BASE + hg.NVDIMM_DATA_OFFSET + BAD_OFF - NV_BASE) // SECTOR
            (root / "sys/bus/nd/devices/region1/badblocks").write_text(f"{sector} 8\n")
            os.kill(int(pidfile.read_text()), signal.SIGHUP)
            deadline = time.monotonic() + 30
            while not any("forwarded" in ln for ln in lines):
                assert time.monotonic() < deadline, "".join(lines)
                time.sleep(0.1)
        return run

    def vanish(_q):
        def run():
            # The namespace takes another UUID: tag T_NV is gone from the host.
            (root / "sys/bus/nd/devices/namespace1.0/uuid").write_text(
                "0badc0de-0018-4000-8000-0000000000aa\n")
            os.kill(int(pidfile.read_text()), signal.SIGHUP)
            follower["p"].wait(30)
        return run

    def detach(_q):
        def run():
            follower["detach"] = hg.run_in_host(root, [tagmem, "vm-detach", "--qmp",
                                                       str(files.qmp), "--wait", "20", T_NV])
        return run

    try:
        dcdkit.serve(guest, files, {"attach": attach, "poison": poison, "vanish": vanish,
                                    "detach": detach}, GUEST_TIMEOUT_S)
    finally:
        res = guest.wait()
        if "p" in follower:
            os.killpg(follower["p"].pid, signal.SIGTERM)
            follower["p"].wait(10)
    print(res.console[-12000:])
    print("host follower:", "".join(lines))
    assert res.verdict == "PASS", res.tail()
    assert any(f"DPA {BAD_OFF:#x}" in ln for ln in lines), lines
    health = section_json(res, "meta-poisoned")["health"]
    assert health["status"] == "degraded", health
    assert [(b["offset"], b["length"]) for b in health["bad_ranges"]] == [(BAD_OFF, 4096)], health
    # The tag that left the host was asked back: the follower released it
    # and exited 0; the guest, holding it, was told (release_requested), let
    # go, and the next release took it out of its mount.
    assert follower["p"].returncode == 0, "".join(lines)
    assert any("left the host; the guest was asked" in ln for ln in lines), lines
    assert '"event":"release-requested"' in section(res, "release-requested")
    assert "release_requested" in section_json(res, "meta-asked-back")
    assert follower["detach"].returncode == 0, follower["detach"].stderr
    assert "TM-EVENT: tag gone" in res.console
