# SPDX-License-Identifier: Apache-2.0
"""Smoke test of the real-devdax harness itself.

Why: every later QEMU test of tagmem trusts that vmkit guests have dax devices
carrying the requested tags, that bytes written through a MAP_SHARED mapping
reach the shared backing file, and that two guests on one backing file really
share memory. This proves each of those once, with nothing of tagmem involved.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import time

import pytest

import vmkit

TAG_A = "7a9e3c1e-5f2b-4d0c-9a51-3c2e8b4f6d01"
TAG_B = "c0ffee00-1d2e-4f3a-8b5c-6d7e8f901234"
WRITE_LEN = 32 * vmkit.MiB
ROUNDS = 200


def test_daxmap_pattern_matches_vmkit(guest_tools, tmp_path):
    """The C++ writer and the Python model agree (no VM needed), so a pattern
    search in a backing file means what it says."""
    f = tmp_path / "plain.bin"
    f.touch()
    daxmap = str(guest_tools["daxmap"])
    out = subprocess.run([daxmap, "write", str(f), "0x5eed", "3M"], capture_output=True,
                         text=True, check=True).stdout
    assert "bytes=3145728" in out and out.rstrip().endswith("OK")
    data = f.read_bytes()
    assert len(data) == 4 * vmkit.MiB  # rounded up to the 2 MiB dax align
    assert data[:3 * vmkit.MiB] == vmkit.daxmap_pattern(0x5eed, 3 * vmkit.MiB)
    assert vmkit.find_pattern(f, 0x5eed) == 0
    bad = subprocess.run([daxmap, "verify", str(f), "0x5eee", "3M"], capture_output=True,
                         text=True)
    assert bad.returncode == 1 and "FAIL" in bad.stdout


@pytest.fixture(scope="module")
def smoke_nvdimm(vm_assets, vm_timings) -> vmkit.NvdimmSpec:
    """A 1 GiB backing image in the cache with two tagged devdax namespaces;
    prepared by a boot only the first time (stamp file next to the image)."""
    spec = vmkit.NvdimmSpec(vm_assets.cache_dir / "images" / "smoke-pmem0.img", "1G")
    t0 = time.monotonic()
    res = vmkit.prepare_nvdimm(spec, [TAG_A, TAG_B], "256M", assets=vm_assets)
    if res is None:
        vm_timings["prepare"] = f"{time.monotonic() - t0:.1f}s (stamp hit, no boot)"
    else:
        vm_timings["first boot (prepare labels)"] = (
            f"{res.elapsed_s:.1f}s total, /init after {res.userland_s:.1f}s")
    return spec


def test_tags_visible_and_bytes_reach_the_backing_file(vm_assets, guest_tools, smoke_nvdimm,
                                                       vm_timings, tmp_path):
    seed = random.getrandbits(63) | 1  # fresh, so an old run's bytes cannot match
    scenario = f"""
vmkit_section ndctl ndctl list -N -v
vmkit_section daxctl daxctl list
ls -l /dev/dax*
test -c /dev/fuse
A=$(vmkit_dax_for_tag {TAG_A})
B=$(vmkit_dax_for_tag {TAG_B})
echo "TAGDEV A=$A B=$B"
daxmap write "$A" {seed:#x} {WRITE_LEN}
daxmap verify "$A" {seed:#x} {WRITE_LEN}
"""
    initrd = vmkit.build_initramfs(tmp_path / "write.cpio", [guest_tools["daxmap"]],
                                   scenario=scenario, assets=vm_assets)
    res = vmkit.boot(initrd, [smoke_nvdimm], timeout_s=300, name="write",
                     log_path=tmp_path / "write.log", assets=vm_assets).check()
    vm_timings["boot (write scenario)"] = (f"{res.elapsed_s:.1f}s total, "
                                           f"/init after {res.userland_s:.1f}s")

    # ndctl shows the tag as the namespace's raw_uuid (only with -v); "uuid"
    # is the random dax info-block UUID.
    # In verbose mode the dax device sits under daxregion.devices.
    namespaces = json.loads(res.section("ndctl"))
    dev_of = {ns["raw_uuid"]: ns["daxregion"]["devices"][0]["chardev"] for ns in namespaces}
    assert set(dev_of) == {TAG_A, TAG_B}, namespaces
    assert all(ns["mode"] == "devdax" for ns in namespaces)
    assert all(ns["uuid"] not in (TAG_A, TAG_B) for ns in namespaces)
    daxdevs = {d["chardev"] for d in json.loads(res.section("daxctl"))}
    assert daxdevs == set(dev_of.values())
    m = re.search(r"TAGDEV A=(\S+) B=(\S+)", res.console)
    assert m and m.group(1) == "/dev/" + dev_of[TAG_A]
    assert m.group(2) == "/dev/" + dev_of[TAG_B]
    for dev in daxdevs:
        assert re.search(rf"^c.* /dev/{re.escape(dev)}$", res.console, re.M), dev
    w = re.search(r"daxmap write: .*minflt=(\d+).* MBps=([\d.]+) OK", res.console)
    assert w, res.tail()
    vm_timings["daxmap write 32 MiB in guest"] = f"{w.group(2)} MB/s, {w.group(1)} minor faults"

    # On the host the bytes sit in the backing file (first namespace: 2 MiB in).
    off = vmkit.find_pattern(smoke_nvdimm.path, seed)
    assert off is not None, "pattern not found in the backing file"
    with open(smoke_nvdimm.path, "rb") as fh:
        for start in (0, WRITE_LEN - vmkit.MiB):
            fh.seek(off + start)
            assert fh.read(vmkit.MiB) == vmkit.daxmap_pattern(seed, vmkit.MiB, start // 8)
    vm_timings["pattern offset in backing file"] = f"{off / vmkit.MiB:g} MiB"

    # A later boot reads the same bytes back through the dax device.
    verify = vmkit.build_initramfs(
        tmp_path / "verify.cpio", [guest_tools["daxmap"]],
        scenario=f'daxmap verify "$(vmkit_dax_for_tag {TAG_A})" {seed:#x} {WRITE_LEN}\n',
        assets=vm_assets)
    res2 = vmkit.boot(verify, [smoke_nvdimm], timeout_s=300, name="verify",
                      log_path=tmp_path / "verify.log", assets=vm_assets).check()
    vm_timings["later boot (verify scenario)"] = (f"{res2.elapsed_s:.1f}s total, "
                                                  f"/init after {res2.userland_s:.1f}s")


def test_two_guests_pingpong_over_one_backing_file(vm_assets, guest_tools, smoke_nvdimm,
                                                    vm_timings, tmp_path):
    """Two guests ("hosts") share the backing file with share=on and exchange
    messages through the same tagged /dev/daxX.Y."""
    scenario = f"""
dev=$(vmkit_dax_for_tag {TAG_B})
echo "role=$VMKIT_ROLE dev=$dev"
daxmap pingpong "$dev" "$VMKIT_ROLE" {ROUNDS} 240
"""
    initrd = vmkit.build_initramfs(tmp_path / "pingpong.cpio", [guest_tools["daxmap"]],
                                   scenario=scenario, assets=vm_assets)
    t0 = time.monotonic()
    results = vmkit.boot_many([
        dict(initrd=initrd, nvdimms=[smoke_nvdimm], smp=1, timeout_s=420, name=role,
             env={"VMKIT_ROLE": role}, log_path=tmp_path / f"{role}.log", assets=vm_assets)
        for role in ("ping", "pong")])
    wall = time.monotonic() - t0
    for res in results:
        res.check()
        assert re.search(rf"daxmap pingpong: role={res.name} OK rounds={ROUNDS}\b", res.console)
        assert f"daxmap {res.name}: #{ROUNDS} got '" in res.console
    ping = results[0].console
    assert f"daxmap ping: #{ROUNDS} got 'pong #{ROUNDS} <- ping #{ROUNDS}'" in ping
    stats = re.search(r"role=ping rounds=\d+ rtt_us (.*)", ping)
    assert stats, results[0].tail()
    vm_timings["two guests boot+pingpong wall"] = f"{wall:.1f}s"
    vm_timings[f"pingpong RTT ({ROUNDS} rounds)"] = stats.group(1)
