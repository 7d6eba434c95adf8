# SPDX-License-Identifier: Apache-2.0
"""Issue 12: a host tag handed to two QEMU guests (CTest qemu_vm_handoff).

The guests get the arguments `tagmem vm-args` generates on a synthetic host
that has the tag (tagmemvm.vm_args_from_synthetic_host), with one documented
switch:
this CI host has no real devdax, so the tag's memory backend maps a plain
file instead of /run/tagmem/<tag>/data (tagmemvm.with_backing_file). Each
guest runs the unchanged tagmem and tagmemfs, which find the tag through the
fw_cfg item and enable the guest's dax_hmem device. Neither guest has
qemu_fw_cfg loaded when tagmemfs starts (a late `modprobe`, followed by the
driver's bind event, with no reload): A has the disabled device from the
start, B loads dax_hmem after the item was read too. Checked:
- both guests list the tag with the host's size, shareable flag, name and
  performance data (and say where that came from), A from the rescan at
  fw_cfg's bind, B from dax_hmem's add event after it;
- byte k of the guests' data is byte k of the host's file: the host's
  pattern at k0 is read by both guests; guest A's write at k1 is read by the
  host (while A runs) and by guest B; B's write at k2 by A and the host;
- nothing else in the file changed: the hand-off wrote nothing into it.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

import tagmemvm
import vmkit
from test_real_devdax import _record, _seed, _verify

MiB = vmkit.MiB
GUEST_TIMEOUT_S = 300
TAG = tagmemvm.HANDOFF_TAG
LEN = 256 * 1024
# Offsets not aligned to anything (multiples of 8 for daxmap's 64-bit words):
# the same offset on both sides is the point.
K_HOST = 5 * MiB + 3 * 4096 + 8
K_A = 17 * MiB + 24
K_B = 33 * MiB + 4096 + 40


def test_two_guests_share_a_handed_tag(vm_assets, product, guest_tools, vm_timings, tmp_path):
    seeds = {"host": _seed(), "A": _seed(), "B": _seed()}
    backing = tmp_path / "tag.data"
    tagmemvm.handoff_host_file(backing)
    holes = [(K_HOST, LEN), (K_A, LEN), (K_B, LEN)]
    # The host writes its pattern at K_HOST before the guests start.
    with open(backing, "r+b") as fh:
        fh.seek(K_HOST)
        fh.write(vmkit.daxmap_pattern(seeds["host"], LEN))
    before = tagmemvm.hash_outside(backing, holes)

    # The real `tagmem vm-args`, against a synthetic host that has the tag.
    generated = tagmemvm.vm_args_from_synthetic_host(tagmemvm.build_dir(), tmp_path)
    host_part = generated["fw_cfg"]["content"]["tags"][0]["host"]
    assert host_part["performance"] == tagmemvm.HANDOFF_PERF, host_part
    qemu_args = tagmemvm.with_backing_file(generated["qemu"], TAG, backing)

    steps = f"""
daxmap verify "$D" {seeds['host']:#x} {LEN} {K_HOST}
echo "TM-EVENT: read the host's pattern uptime=$(tm_now)"
case "$TM_HOST" in
A)
    daxmap write "$D" {seeds['A']:#x} {LEN} {K_A}
    echo "TM-EVENT: A wrote uptime=$(tm_now)"
    tm_wait_pattern {seeds['B']:#x} {LEN} {K_B}
    echo "TM-EVENT: A read B's pattern uptime=$(tm_now)"
    ;;
B)
    tm_wait_pattern {seeds['A']:#x} {LEN} {K_A}
    echo "TM-EVENT: B read A's pattern uptime=$(tm_now)"
    daxmap write "$D" {seeds['B']:#x} {LEN} {K_B}
    echo "TM-EVENT: B wrote uptime=$(tm_now)"
    ;;
esac
"""
    initrd = tagmemvm.build_initrd(tmp_path / "handoff.cpio",
                                   tagmemvm.handoff_scenario(TAG, steps),
                                   assets=vm_assets, product=product, tools=guest_tools)
    t0 = time.monotonic()
    guests = tagmemvm.start_all([
        dict(initrd=initrd, smp=1, timeout_s=GUEST_TIMEOUT_S, name=f"guest-{h}",
             # Both load qemu_fw_cfg after tagmemfs started, B dax_hmem as
             # well (see handoff_scenario).
             env={"TM_HOST": h, "TM_LATE_FWCFG": "1", "TM_LATE_HMEM": "1" if h == "B" else "0"},
             append=generated["kernel_cmdline"],
             machine_args=qemu_args, log_path=tmp_path / f"guest-{h}.log", assets=vm_assets)
        for h in ("A", "B")])
    # The host reads guest A's bytes while A is still running.
    host_saw_a = None
    try:
        guests[0].wait_for(r"TM-EVENT: A wrote", timeout_s=GUEST_TIMEOUT_S)
        host_saw_a = tagmemvm.read_at(backing, K_A, LEN) == vmkit.daxmap_pattern(seeds["A"], LEN)
    except vmkit.VmError:
        pass  # reported below from the guests' consoles
    a, b = tagmemvm.wait_all(guests)
    vm_timings["handoff two guests wall"] = f"{time.monotonic() - t0:.1f}s"
    _record(vm_timings, "handoff guest A", a)
    _record(vm_timings, "handoff guest B", b)

    def uptime(res: vmkit.BootResult, event: str) -> float:
        for e in tagmemvm.events(res):
            if e.startswith(event + " uptime="):
                return float(e.rsplit("=", 1)[1])
        raise AssertionError(f"guest {res.name}: no event {event!r}\n{res.tail(80)}")

    def check() -> None:
        for res in (a, b):
            assert res.passed, f"guest {res.name}: {res.verdict}\n{res.tail(80)}"
            item = tagmemvm.section_json(res, "handoff-item")
            assert item["tags"][0]["tag"] == TAG
            log = tagmemvm.section(res, "tagmemfs-log")
            # qemu_fw_cfg came after the mount: its bind made the rescan
            # that read the item (no SIGHUP, no reload).
            assert "rescan (fw_cfg bound)" in log, res.tail(80)
            assert "rescan (SIGHUP)" not in log
            appeared = uptime(res, "tag appeared") - uptime(res, "modprobe qemu_fw_cfg")
            vm_timings[f"handoff {res.name[-1]}: tag after modprobe qemu_fw_cfg"] = (
                f"{appeared:.2f}s")
            if res.name.endswith("A"):
                # dax_hmem made the device disabled; tagmem enabled it at
                # the rescan of fw_cfg's bind.
                assert "dax0.0 driver= target_node=1 " in tagmemvm.section(res, "dax-before")
                assert re.search(rf"tag {TAG} added \(ready, dax0\.0\) \[fw_cfg bound\]",
                                 log), res.tail(80)
            else:
                # No device when tagmemfs started: it came by its add event,
                # after the item was read at fw_cfg's bind.
                assert "dax0.0" not in tagmemvm.section(res, "dax-before")
                assert re.search(rf"tag {TAG} added \(ready, dax0\.0\) \[uevent\]",
                                 log), res.tail(80)
                assert log.index("rescan (fw_cfg bound)") < log.index(f"tag {TAG} added")
            assert "dax0.0 driver=device_dax" in tagmemvm.section(res, "dax-after")
            dev = tagmemvm.check_handoff_guest(res, TAG)
            assert dev["handoff"]["host"] == {k: v for k, v in host_part.items()
                                              if k != "performance"}
            assert (dev["device"], dev["mode"], dev["target_node"]) == ("dax0.0", "devdax", 1)
        assert any(e.startswith("B read A's pattern") for e in tagmemvm.events(b))
        assert any(e.startswith("A read B's pattern") for e in tagmemvm.events(a))
        assert host_saw_a, "the host did not find guest A's pattern while A ran"
        for seed, off in ((seeds["host"], K_HOST), (seeds["A"], K_A), (seeds["B"], K_B)):
            assert tagmemvm.read_at(backing, off, LEN) == vmkit.daxmap_pattern(seed, LEN), off
        assert tagmemvm.hash_outside(backing, holes) == before, \
            "bytes outside what was written changed: the hand-off wrote into the memory"

    _verify(check, a, b)
