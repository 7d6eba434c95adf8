# SPDX-License-Identifier: Apache-2.0
"""CXL Dynamic Capacity on synthetic hosts: the v11 layout and claiming.

The real kernel behaviour (a `uuid` write carving the extents into the seed,
the bind making /dev/daxR.N usable) is tested in QEMU guests on a DCD
kernel (tests/qemu/test_dcd_real.py). Here the production daemon and CLI run
against fake sysfs trees: what they read, what they write and where, every
refusal, and that nothing is written for what must not be claimed. A fake
sysfs has no kernel behind it, so a test plays the kernel's part by
rewriting the tree after tagmem wrote the tag.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

import hostgen as hg
from conftest import TAGMEM, eventually, list_json, run_tagmem, write_config
from test_online import run_isolated

GiB, MiB = hg.GiB, hg.MiB
TAG = "5be13bce-ae34-4a77-b6c3-16df975fcf1a"
TAG2 = "6f1c2d3e-0000-4000-8000-00000000dcd2"
BASE = 0x3D000_0000


def offered_host(abi="v11", tag_len=256 * MiB, seed=True, extra=None) -> hg.Host:
    """Region 0 as a v11 kernel shows it after an add of TAG: extent0.1
    offered, the seed dax0.0 (size 0, no driver), an untagged extent0.2."""
    h = hg.Host(abi)
    h.node(1, **hg.CXL_NODE_PERF)
    r = h.dcd_region(region_id=0, base=BASE, size=4 * GiB)
    r.extent(offset=0, length=tag_len, uuid=TAG, index=1)  # the kernel counts from 1
    r.extent(offset=GiB, length=256 * MiB, uuid=None)
    if extra:
        extra(r)
    if seed:
        r.dax(dev_id=0, size=0, uuid=hg.ZERO_UUID, mode="disabled")
    return h


def claimed_host(abi="v11") -> hg.Host:
    """What the kernel makes of offered_host after the claim and the bind."""
    h = hg.Host(abi)
    h.node(1, **hg.CXL_NODE_PERF)
    r = h.dcd_region(region_id=0, base=BASE, size=4 * GiB)
    r.extent(offset=0, length=256 * MiB, uuid=TAG, index=1)
    r.extent(offset=GiB, length=256 * MiB, uuid=None)
    r.dax(dev_id=0, uuid=TAG)
    return h


def writable_sys():
    """The synthetic /sys is read-only; a test that lets tagmem's writes
    land makes it writable (this namespace only)."""
    subprocess.run(["mount", "-o", "remount,bind,rw", "/sys"], check=True)


def metadata(d, tag=TAG) -> dict:
    return json.loads((d.mount_point / tag / "metadata").read_text())


def seed_uuid(host) -> str:
    return (host.sys / "bus/dax/devices/dax0.0/uuid").read_text().strip()


@pytest.mark.parametrize("abi", hg.Host.ABIS)
def test_offered_tag_is_claimed_into_the_seed(make_host, tagmemfs, udev, abi):
    host = make_host(offered_host(abi))
    writable_sys()
    d = tagmemfs()
    # tagmemfs wrote the tag to the seed's uuid and the seed's name to
    # device_dax's bind file; a fake sysfs makes no driver link of that, so
    # the device holds the tag without a driver, and the tag says why.
    assert seed_uuid(host) == TAG
    assert (host.sys / "bus/dax/drivers/device_dax/bind").read_text() == "dax0.0"
    eventually(lambda: metadata(d)["state"] == "disabled", what="the seed re-read with the tag")
    m = metadata(d)
    assert "dax0.0 took the tag but device_dax did not bind it" in m.get("reason", ""), m
    assert "cannot claim its offered capacity" in d.text()
    # The kernel's part: the seed became the tag's 256 MiB devdax device.
    host.rewrite(claimed_host(abi))
    udev.send("bind", "/devices/platform/ACPI0017:00/root0/decoder0.0/region0/dax_region0/dax0.0",
              "dax", DRIVER="device_dax")
    eventually(lambda: metadata(d)["state"] == "ready", what="the claimed tag ready")
    m = metadata(d)
    assert (m["device"], m["size"], m["source"]) == ("dax0.0", 256 * MiB, "dcd")
    [dev] = m["devices"]
    assert [(e["extent"], e["offset"]) for e in dev["extents"]] == [("extent0.1", 0)]
    assert (d.mount_point / TAG / "dev").readlink() == Path("/dev/dax0.0")


def test_read_only_sysfs_keeps_the_tag_offered_with_the_reason(make_host, tagmemfs):
    host = make_host(offered_host())
    d = tagmemfs()
    m = metadata(d)
    assert m["state"] == "offered"
    assert "the kernel refused to give dax0.0 the tag" in m.get("reason", ""), m
    assert "Read-only file system" in m.get("reason", "")
    assert seed_uuid(host) == hg.ZERO_UUID
    assert (d.mount_point / TAG / "data").exists() is False
    # Tried once, not at every extent poll (1 s); a SIGHUP tries again.
    time.sleep(2.5)
    assert d.text().count("cannot claim its offered capacity") == 1
    d.rescan()
    eventually(lambda: d.text().count("cannot claim its offered capacity") == 2,
               what="the SIGHUP's second try")


@pytest.mark.parametrize("conf", ["[defaults]\nclaim = manual\n",
                                  f"[tag {TAG}]\nclaim = manual\n"])
def test_manual_claim_leaves_the_seed_alone(make_host, tagmemfs, tmp_path, conf):
    host = make_host(offered_host())
    writable_sys()
    config = write_config(tmp_path, conf)
    d = tagmemfs("-c", config)
    assert metadata(d)["state"] == "offered"
    assert "could not claim" not in metadata(d).get("reason", "")
    assert seed_uuid(host) == hg.ZERO_UUID
    assert "claimed" not in d.text() and "cannot claim" not in d.text()
    # By hand: the same claim, the same write (a fake sysfs binds nothing).
    r = run_tagmem("claim", TAG, config=config)
    assert r.returncode == 13, r
    assert "dax0.0 took the tag but device_dax did not bind it" in r.stderr
    assert seed_uuid(host) == TAG


def test_inconsistent_extents_are_not_claimed(make_host, tagmemfs):
    # TAG also in region 1: the kernel makes a device of one region's extents.
    h = offered_host()
    r1 = h.dcd_region(region_id=1, base=BASE + 8 * GiB, size=4 * GiB)
    r1.extent(offset=0, length=256 * MiB, uuid=TAG)
    r1.dax(dev_id=0, size=0, uuid=hg.ZERO_UUID, mode="disabled")
    host = make_host(h)
    writable_sys()
    d = tagmemfs()
    m = metadata(d)
    assert m["state"] == "offered" and "lie in two regions" in m.get("reason", ""), m
    assert seed_uuid(host) == hg.ZERO_UUID
    r = run_tagmem("claim", TAG)
    assert r.returncode == 16 and "lie in two regions" in r.stderr, r
    assert seed_uuid(host) == hg.ZERO_UUID


def test_claim_command_refusals(make_host, tmp_path):
    make_host(claimed_host())
    assert run_tagmem("claim", "not-a-uuid").returncode == 2
    r = run_tagmem("claim", "00000000-0000-4000-8000-000000000099")
    assert r.returncode == 3 and "no device or extent carries" in r.stderr
    r = run_tagmem("claim", TAG)  # claimed already: nothing to do, and it says so
    assert r.returncode == 0 and "claimed already (dax0.0, ready)" in r.stdout, r
    bad = write_config(tmp_path, "[defaults]\nclaim = sometimes\n")
    r = run_tagmem("claim", TAG, config=bad)
    assert r.returncode == 14 and "expected auto or manual" in r.stderr, r
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        str(TAGMEM), "claim", TAG], capture_output=True, text=True)
    assert r.returncode == 10, r


def test_unclaim_gives_the_capacity_back(make_host, tmp_path):
    """tagmem unclaim: device_dax unbound, size 0, the device deleted; every
    refusal first, with nothing written. Its look for users runs in a PID
    namespace of its own (test_online's run_isolated: outside, this machine
    hides some processes' descriptors even from root, and tagmem rightly
    refuses what it cannot check)."""
    host = make_host(claimed_host())
    conf = write_config(tmp_path, "")
    writable_sys()
    region = Path(os.path.realpath("/sys/bus/cxl/devices/dax_region0"))
    unbind = Path("/sys/bus/dax/drivers/device_dax/unbind")
    size = Path("/sys/bus/dax/devices/dax0.0/size")
    delete = region / "dax_region/delete"
    assert run_tagmem("unclaim", "not-a-uuid").returncode == 2
    r = run_tagmem("unclaim", "00000000-0000-4000-8000-000000000099")
    assert r.returncode == 3 and "no device or extent carries" in r.stderr, r
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        str(TAGMEM), "unclaim", TAG], capture_output=True, text=True)
    assert r.returncode == 10 and "run it as root" in r.stderr, r
    # From a PID namespace whose /proc hides processes: refused, exit 15.
    r = run_isolated("unclaim", TAG, config=conf, host_pidns=False)
    assert r.returncode == 15 and "nothing was changed" in r.stderr, r
    assert (unbind.read_text(), size.read_text(), delete.read_text()) == ("", f"{256 * MiB}\n", "")
    r = run_isolated("unclaim", TAG, config=conf, hold=("/dev/dax0.0",))  # O_PATH: no user
    assert r.returncode == 0, r
    assert f"tag {TAG} gave its capacity back (dax0.0 is gone)" in r.stdout, r
    # The kernel's three writes, in their files (a fake kernel acts on none;
    # tagmem writes attributes without truncating, as sysfs wants, so "0"
    # lands over the first digit of the old size in the tree's file).
    assert (unbind.read_text(), size.read_text(), delete.read_text()) == (
        "dax0.0", "0" + f"{256 * MiB}\n"[1:], "dax0.0")
    assert seed_uuid(host) == TAG  # the uuid is the kernel's to clear


def test_unclaim_of_what_is_not_claimed(make_host):
    make_host(offered_host())
    writable_sys()
    r = run_tagmem("unclaim", TAG)
    assert r.returncode == 0 and "is not claimed" in r.stdout, r
    assert Path("/sys/bus/dax/drivers/device_dax/unbind").read_text() == ""
    # The untagged extent is nobody's tag; the seed is no tag either.
    r = run_tagmem("unclaim", hg.ZERO_UUID)
    assert r.returncode in (2, 3), r


def test_nvdimm_tag_survives_a_null_device_uuid(make_host):
    """v11 gives the NVDIMM dax device a null `uuid` too: the namespace's tag counts."""
    make_host("nvdimm")  # Host() is v11 by default: every dax device has a null uuid
    tags = {t["tag"]: t for t in list_json()["tags"]}
    assert tags[hg.TAG_NV0]["source"] == "nvdimm", tags
    assert (Path("/sys/bus/dax/devices/dax1.0/uuid").read_text().strip() == hg.ZERO_UUID)
