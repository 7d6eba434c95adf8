# SPDX-License-Identifier: Apache-2.0
"""Issue 12, guest side, on synthetic guests: the fw_cfg hand-off item
(/sys/firmware/qemu_fw_cfg/by_name/opt/org.tagmem/tags/raw) tags the
hmem devices whose range and node it names, through the real `tagmem`
and `tagmemfs`; a malformed item is refused and changes nothing else;
tagmemfs reads the item when the fw_cfg driver binds after it started
(udev-format events from uevent.py, as in test_hotplug.py).

The devices here are already bound to device_dax: enabling a disabled one
goes through libdaxctl, which loads the driver's module into the running
kernel, and that must not happen on the machine running these tests. The
unit tests (handoff_test.cpp) cover enabling with a fake host, and
tests/qemu/test_vm_handoff.py with a real guest kernel."""
from __future__ import annotations

import json
import os
import time

import hostgen as hg
from conftest import eventually, list_json, run_as, run_tagmem, write_config

GiB = hg.GiB
MiB = hg.MiB
G4 = 4 * GiB
NOBODY = 65534
ITEM = "firmware/qemu_fw_cfg/by_name/opt/org.tagmem/tags/raw"
TAG_X = "5a5a0000-0000-4000-8000-0000000000a1"
TAG_Y = "5a5a0000-0000-4000-8000-0000000000b2"


def entry(tag, start, size, node, name="", shareable=True, perf=None):
    host = {"device": "dax7.0", "numa_node": 3, "source": "nvdimm"}
    if perf is not None:
        host["performance"] = perf
    return {"tag": tag, "name": name, "shareable": shareable, "size": size,
            "guest_start": start, "guest_node": node, "host": host}


def item(*entries, **top) -> str:
    return json.dumps({"format": "tagmem-handoff", "version": 1, "tags": list(entries), **top})


def guest(raw: str | None) -> hg.Host:
    """A guest as QEMU + the host side's arguments make it: two hmem devices
    above 4G on nodes 1 and 2, an NVDIMM namespace tag of its own, and the item."""
    h = hg.Host()
    h.hmem(region_id=0, base=G4, size=128 * MiB, target_node=1)
    h.hmem(region_id=1, base=G4 + 128 * MiB, size=64 * MiB, target_node=2)
    nv = h.nvdimm_region(region_id=3, base=16 * GiB, size=4 * GiB, target_node=4)
    nv.namespace(0, hg.TAG_NV0, size=GiB)
    if raw is not None:
        h.override(ITEM, raw + "\0")  # QEMU's string= item ends in its NUL
    return h


GOOD = item(entry(TAG_X, G4, 128 * MiB, 1, name="pool-x",
                  perf={"read_latency_ns": 210, "write_bandwidth_mbps": 12000}),
            entry(TAG_Y, G4 + 128 * MiB, 64 * MiB, 2, name="pool-y", shareable=False))


def test_handoff_tags_the_named_devices(make_host):
    make_host(guest(GOOD))
    out = list_json()
    tags = {t["tag"]: t for t in out["tags"]}
    assert sorted(tags) == sorted([TAG_X, TAG_Y, hg.TAG_NV0])
    x, y = tags[TAG_X], tags[TAG_Y]
    assert (x["state"], x["source"], x["device"], x["size"]) == ("ready", "handoff", "dax0.0",
                                                                   128 * MiB)
    assert (x["name"], x["shareable"], x["shareable_from"]) == ("pool-x", True, "handoff")
    dev = x["devices"][0]
    assert dev["source"] == "handoff" and dev["target_node"] == 1
    assert dev["performance"] == {"read_latency_ns": 210, "write_bandwidth_mbps": 12000}
    assert dev["performance_source"] == {"read_latency_ns": "host via fw_cfg",
                                         "write_bandwidth_mbps": "host via fw_cfg"}
    assert dev["handoff"] == {"item": "fw_cfg opt/org.tagmem/tags", "tag": TAG_X,
                              "guest_node": 1,
                              "host": {"device": "dax7.0", "numa_node": 3, "source": "nvdimm"}}
    assert dev["ranges"] == [{"start": G4, "end": G4 + 128 * MiB - 1, "size": 128 * MiB}]
    assert (y["name"], y["shareable"], y["device"]) == ("pool-y", False, "dax1.0")
    assert "performance" not in y["devices"][0]
    assert tags[hg.TAG_NV0]["source"] == "nvdimm"
    assert out["rejected"] == [] and out["untagged"] == []


def test_metadata_in_the_mount_and_no_addresses_for_others(make_host, tagmemfs):
    make_host(guest(GOOD))
    mnt = tagmemfs().mount_point
    shown = json.loads(run_tagmem("show", "--json", TAG_X).stdout)
    t = mnt / TAG_X
    assert (t / "size").read_text() == f"{128 * MiB}\n"
    assert (t / "shareable").read_text() == "1\n"
    assert os.readlink(t / "dev") == "/dev/dax0.0"
    r = run_as(NOBODY, NOBODY, f"print(open({str(t / 'metadata')!r}).read())")
    assert r.returncode == 0, r.stderr
    meta = json.loads(r.stdout)
    expected = json.loads(json.dumps(shown))
    for d in expected["devices"]:
        del d["ranges"]
    assert meta == expected
    assert meta["devices"][0]["performance_source"]["read_latency_ns"] == "host via fw_cfg"
    assert str(G4) not in r.stdout and f"{G4:x}" not in r.stdout


def test_malformed_items_are_refused_cleanly(make_host):
    bad_items = {
        "not json": "{\"format\": \"tagmem-handoff\",",
        "other format": json.dumps({"format": "x", "version": 1, "tags": []}),
        "version 2": item(version=2),
        "bad uuid": item(entry("5A5A0000-0000-4000-8000-0000000000A1", G4, 128 * MiB, 1)),
        "duplicate": item(entry(TAG_X, G4, 2 * MiB, 1), entry(TAG_X, G4 + 2 * MiB, 2 * MiB, 2)),
        "overlap": item(entry(TAG_X, G4, 128 * MiB, 1), entry(TAG_Y, G4 + 64 * MiB, 64 * MiB, 2)),
        "size": item(entry(TAG_X, G4, 3 * MiB, 1)),
        "oversized": item(padding="x" * 70000),
    }
    for what, raw in bad_items.items():
        make_host(guest(raw))
        r = run_tagmem("list", "--json")
        assert r.returncode == 0, (what, r.stderr)
        out = json.loads(r.stdout)
        # Refused as a whole: no hand-off tag; the device's own tag stays.
        assert [t["tag"] for t in out["tags"]] == [hg.TAG_NV0], what
        assert sorted(u["device"] for u in out["untagged"]) == ["dax0.0", "dax1.0"], what
        reasons = [r["reason"] for r in out["rejected"] if r["device"] == "fw_cfg opt/org.tagmem/tags"]
        assert len(reasons) == 1, (what, out["rejected"])
        assert reasons[0] and not reasons[0].startswith("fw_cfg"), reasons
        assert str(G4) not in reasons[0] and f"{G4:x}" not in reasons[0]
        # The human listing says so too, and exits as usual.
        r = run_tagmem("list")
        assert r.returncode == 0 and "fw_cfg opt/org.tagmem/tags" in r.stdout + r.stderr, what


def test_entry_naming_memory_the_guest_lacks(make_host):
    # Right range, wrong node; and a range no device has.
    make_host(guest(item(entry(TAG_X, G4, 128 * MiB, 2 + 5),
                         entry(TAG_Y, 8 * GiB, 64 * MiB, 2))))
    out = list_json()
    assert [t["tag"] for t in out["tags"]] == [hg.TAG_NV0]
    reasons = sorted(r["reason"] for r in out["rejected"])
    assert len(reasons) == 2
    assert reasons[0].startswith(f"tag {TAG_X}: no dax device has its range on guest node 7")
    assert reasons[1].startswith(f"tag {TAG_Y}: no dax device")


def test_handoff_wins_over_match_range(make_host, tmp_path):
    make_host(guest(GOOD))
    conf = write_config(tmp_path, f"[tag {hg.TAG_A}]\nname = local\n"
                                  f"match-range = {G4:#x}-{G4 + 128 * MiB - 1:#x}\n"
                                  f"[tag {TAG_X}]\nname = mine\nshareable = no\n"
                                  "owner = nobody\nmode = 0640\n")
    out = list_json(config=conf)
    tags = {t["tag"]: t for t in out["tags"]}
    assert hg.TAG_A not in tags
    x = tags[TAG_X]
    assert (x["name"], x["shareable"], x["access"]["owner"], x["access"]["mode"]) == (
        "pool-x", True, "nobody", "0640")
    assert any(f"tagmem.conf matches this memory to tag {hg.TAG_A}" in w
               for w in x["devices"][0]["warnings"])


# QEMU's fw_cfg device as the Debian 6.12 guest kernel names it (ACPI
# QEMU0002), and what `modprobe qemu_fw_cfg` / `rmmod` sent (docs/vm.md).
FW_CFG = "/devices/pci0000:00/QEMU0002:00"


def handled(d, line: str, count: int) -> None:
    """Until the daemon has logged `line` (its debug line of an event) count times."""
    eventually(lambda: d.text().count(line) >= count, timeout=20, what=line)


def test_late_fw_cfg_driver_is_followed_and_nothing_else(make_host, tagmemfs, udev):
    host = make_host(guest(None))  # qemu_fw_cfg not loaded: no /sys/firmware/qemu_fw_cfg
    d = tagmemfs("--uevents", "udev")
    mnt = d.mount_point
    assert sorted(p.name for p in mnt.iterdir()) == [hg.TAG_NV0]
    # The module loads: its items appear in sysfs (the kernel makes them
    # before the bind event).
    host.rewrite(guest(GOOD))
    # Events that are not the fw_cfg driver's bind change nothing, however
    # many: other platform drivers, fw_cfg's own add and change, a bind
    # without the driver or with another one, the firmware ksets' adds.
    for i in range(200):
        udev.send("bind", f"/devices/platform/serial8250.{i}", "platform", DRIVER="serial8250")
    udev.send("add", FW_CFG, "platform")
    udev.send("change", FW_CFG, "platform")
    udev.send("bind", FW_CFG, "platform")
    udev.send("bind", FW_CFG, "platform", DRIVER="fw_cfg_x")
    udev.send("unbind", FW_CFG, "platform", DRIVER="fw_cfg")
    udev.send("add", "/firmware/qemu_fw_cfg/by_name/opt/org.tagmem", "opt")
    udev.send("bind", "/devices/pci0000:00/QEMU0002:01", "nd", DRIVER="fw_cfg")
    udev.send("change", "/devices/ndbus9/region9", "nd")  # the last: all before it are handled
    handled(d, "uevent change nd region9", 1)
    assert d.text().count("uevent bind platform serial8250.") == 200
    assert "rescan (fw_cfg bound)" not in d.text()
    assert sorted(p.name for p in mnt.iterdir()) == [hg.TAG_NV0]

    t0 = time.monotonic()
    udev.send("bind", FW_CFG, "platform", DRIVER="fw_cfg", MODALIAS="acpi:QEMU0002:")
    eventually(lambda: (mnt / TAG_X / "size").exists() and (mnt / TAG_Y / "size").exists(),
               timeout=20, what="the handed-over tags")
    print(f"tags {time.monotonic() - t0:.3f} s after the bind event")
    assert (mnt / TAG_X / "size").read_text() == f"{128 * MiB}\n"
    assert os.readlink(mnt / TAG_Y / "dev") == "/dev/dax1.0"
    assert d.text().count("rescan (fw_cfg bound)") == 1
    meta = json.loads((mnt / TAG_X / "metadata").read_text())
    assert meta["source"] == "handoff" and meta["name"] == "pool-x"

    # rmmod qemu_fw_cfg: every item goes with the driver. The memory stays,
    # and so do its tags: at the events, and at a rescan (SIGHUP).
    host.rewrite(guest(None))
    udev.send("remove", "/firmware/qemu_fw_cfg/by_name/opt/org.tagmem", "opt")
    udev.send("unbind", FW_CFG, "platform")
    udev.send("remove", "/bus/platform/drivers/fw_cfg", "drivers")
    handled(d, "uevent unbind platform QEMU0002:00", 2)
    d.rescan()
    assert sorted(p.name for p in mnt.iterdir()) == sorted([TAG_X, TAG_Y, hg.TAG_NV0])
    assert json.loads((mnt / TAG_X / "metadata").read_text()) == meta
    assert "fw_cfg opt/org.tagmem/tags: rejected" not in d.text()

    # Loaded again: read again (the same item), the same tags.
    host.rewrite(guest(GOOD))
    udev.send("bind", FW_CFG, "platform", DRIVER="fw_cfg")
    eventually(lambda: d.text().count("rescan (fw_cfg bound)") == 2, timeout=20,
               what="the second rescan")
    assert sorted(p.name for p in mnt.iterdir()) == sorted([TAG_X, TAG_Y, hg.TAG_NV0])
