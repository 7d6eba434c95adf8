# SPDX-License-Identifier: Apache-2.0
"""Tier 2: the production discovery code (libdaxctl + core) on synthetic
hosts, through the real `tagmem list --json`."""
from __future__ import annotations

import json
import subprocess

import hostgen as hg
import pytest
from conftest import list_json, run_tagmem, write_config

GiB = hg.GiB
MiB = hg.MiB


def tags_by_uuid(out: dict) -> dict:
    return {t["tag"]: t for t in out["tags"]}


def names(items) -> list[str]:
    return sorted(i["device"] for i in items)


def test_empty_host_has_nothing(make_host):
    make_host("empty")
    assert list_json() == {"tags": [], "untagged": [], "rejected": [], "config_errors": []}


def test_dcd_host(make_host):
    make_host("dcd")
    out = list_json()
    tags = tags_by_uuid(out)
    assert sorted(tags) == sorted([hg.TAG_A, hg.TAG_B, hg.TAG_C])
    # TAG_C is carried by an extent that no dax device has claimed.
    c = tags[hg.TAG_C]
    assert (c["state"], c["source"], c["devices"]) == ("offered", "dcd", [])
    assert c["extents"] == [{"extent": "extent0.4", "offset": 4 * GiB, "length": GiB}]
    assert "device" not in c and "size" not in c
    a = tags[hg.TAG_A]
    assert (a["source"], a["state"], a["device"], a["path"]) == ("dcd", "ready", "dax0.0",
                                                                  "/dev/dax0.0")
    assert a["size"] == GiB + 512 * MiB and a["align"] == 2 * MiB
    [dev] = a["devices"]
    assert dev["major"] == hg.dax_major() and dev["target_node"] == 1
    assert dev["mode"] == "devdax" and dev["region"] == 0
    # Only the extents that carry this tag, in region order.
    assert [(e["offset"], e["length"]) for e in dev["extents"]] == [(0, GiB),
                                                                   (2 * GiB, 512 * MiB)]
    # DCD capacity: shareable unless tagmem.conf says no (issue 19).
    assert a["shareable"] is True and a["shareable_from"] == "default"
    assert a["access"] == {"owner": "root", "group": "root", "uid": 0, "gid": 0, "mode": "0600"}
    b = tags[hg.TAG_B]
    assert b["device"] == "dax0.1" and b["size"] == 256 * MiB
    assert [e["extent"] for e in b["devices"][0]["extents"]] == ["extent0.1"]
    # The all-zero uuid and the seed are untagged; nothing is rejected.
    assert names(out["untagged"]) == ["dax0.2", "dax0.3"]
    assert out["rejected"] == [] and out["config_errors"] == []


def test_dcd_performance_matches_hmat(make_host):
    make_host("dcd")
    perf = tags_by_uuid(list_json())[hg.TAG_A]["devices"][0]["performance"]
    p = hg.CXL_NODE_PERF
    assert perf == {"read_latency_ns": p["read_latency"], "write_latency_ns": p["write_latency"],
                    "read_bandwidth_mbps": p["read_bandwidth"],
                    "write_bandwidth_mbps": p["write_bandwidth"]}


def test_nvdimm_host(make_host):
    make_host("nvdimm")
    out = list_json()
    tags = tags_by_uuid(out)
    assert sorted(tags) == sorted([hg.TAG_NV0, hg.TAG_NV1])
    nv0 = tags[hg.TAG_NV0]
    assert (nv0["source"], nv0["state"], nv0["device"]) == ("nvdimm", "ready", "dax1.0")
    dev = nv0["devices"][0]
    assert dev["namespace"] == "namespace1.0"
    assert dev["infoblock_uuid"] == hg.INFOBLOCK_NV0
    assert "extents" not in dev
    assert tags[hg.TAG_NV1]["devices"][0]["infoblock_uuid"] == hg.INFOBLOCK_NV1
    assert out["untagged"] == [] and out["rejected"] == []


def test_config_only_host_is_untagged_without_config(make_host):
    make_host("config-only")
    out = list_json()
    assert out["tags"] == []
    assert names(out["untagged"]) == ["dax2.0", "dax3.0"]
    ranges = {u["device"]: u["ranges"] for u in out["untagged"]}
    assert ranges["dax2.0"] == [{"start": 0x30_0000_0000, "end": 0x30_0000_0000 + 8 * GiB - 1,
                                 "size": 8 * GiB}]


def test_config_tags_memory_by_range_and_by_node(make_host, tmp_path):
    make_host("config-only")
    conf = write_config(tmp_path, f"""
# hmem at 192 GiB, by its physical range
[tag 11111111-0000-4000-8000-000000000001]
name = scratch
match-range = 0x3000000000-0x31ffffffff
shareable = yes
owner = 4242
group = 4343
mode = 0640

; and the one on node 3
[tag 22222222-0000-4000-8000-000000000002]
match-node = 3
""")
    out = list_json(conf)
    tags = tags_by_uuid(out)
    t1 = tags["11111111-0000-4000-8000-000000000001"]
    assert (t1["source"], t1["device"], t1["name"], t1["state"]) == ("config", "dax2.0",
                                                                     "scratch", "ready")
    assert t1["shareable"] is True and t1["shareable_from"] == "config"
    assert t1["access"] == {"owner": "4242", "group": "4343", "uid": 4242, "gid": 4343,
                            "mode": "0640"}
    assert tags["22222222-0000-4000-8000-000000000002"]["device"] == "dax3.0"
    assert out["untagged"] == [] and out["config_errors"] == []


def test_config_range_must_match_exactly(make_host, tmp_path):
    make_host("config-only")
    conf = write_config(tmp_path, """[tag 11111111-0000-4000-8000-000000000001]
match-range = 0x3000000000-0x31fffffffe
""")
    out = list_json(conf)
    assert out["tags"] == [] and len(out["untagged"]) == 2


def test_config_does_not_retag_memory_that_carries_a_tag(make_host, tmp_path):
    make_host("mixed")
    # node 1 holds the DCD devices: only the untagged dax0.2 may be matched
    # (dax0.3, the seed, is on node 1 too: two devices, one tag -> conflict).
    conf = write_config(tmp_path, """[tag 33333333-0000-4000-8000-000000000003]
match-node = 2
""")
    out = list_json(conf)
    tags = tags_by_uuid(out)
    assert tags[hg.TAG_A]["source"] == "dcd"
    assert tags[hg.TAG_NV0]["source"] == "nvdimm"  # dax1.x are on node 2, but tagged
    assert tags["33333333-0000-4000-8000-000000000003"]["device"] == "dax2.0"


def test_device_matched_by_two_sections_is_rejected(make_host, tmp_path):
    make_host("config-only")
    conf = write_config(tmp_path, """[tag 11111111-0000-4000-8000-000000000001]
match-node = 2
[tag 22222222-0000-4000-8000-000000000002]
match-range = 0x3000000000-0x31ffffffff
""")
    out = list_json(conf)
    assert out["tags"] == []
    [rej] = out["rejected"]
    assert rej["device"] == "dax2.0" and "more than one configured tag" in rej["reason"]


def test_bad_config_is_reported_and_the_scan_goes_on(make_host, tmp_path):
    make_host("mixed")
    conf = write_config(tmp_path, """[tag 11111111-0000-4000-8000-000000000001]
match-node = 2
mode = 4755
[tag not-a-uuid]
name = x
[tag 22222222-0000-4000-8000-000000000002]
owner = no-such-user-tagmem
match-range = 0x3000000000-0x31ffffffff
""")
    out = list_json(conf)
    errors = "\n".join(out["config_errors"])
    assert "mode = 4755" in errors and "not a UUID" in errors
    assert "unknown user 'no-such-user-tagmem'" in errors
    assert all(str(conf) in e for e in out["config_errors"])
    # No bad section applied, every device still found.
    assert sorted(tags_by_uuid(out)) == sorted([hg.TAG_A, hg.TAG_B, hg.TAG_C, hg.TAG_NV0,
                                                hg.TAG_NV1])
    assert "dax2.0" in names(out["untagged"])


def test_config_syntax_error_drops_the_whole_file(make_host, tmp_path):
    make_host("config-only")
    conf = write_config(tmp_path, """[tag 11111111-0000-4000-8000-000000000001]
match-node = 2
this line is not ini
""")
    out = list_json(conf)
    assert out["tags"] == []
    assert any("syntax error" in e and ":3:" in e for e in out["config_errors"])


def test_missing_config_given_explicitly_is_an_error_but_not_fatal(make_host, tmp_path):
    make_host("dcd")
    out = list_json(tmp_path / "nope.conf")
    assert any("nope.conf" in e for e in out["config_errors"])
    assert len(out["tags"]) == 3


def test_mixed_host(make_host):
    make_host("mixed")
    out = list_json()
    tags = tags_by_uuid(out)
    assert sorted(tags) == sorted([hg.TAG_A, hg.TAG_B, hg.TAG_C, hg.TAG_NV0, hg.TAG_NV1])
    assert {t: v.get("device") for t, v in tags.items()} == {
        hg.TAG_A: "dax0.0", hg.TAG_B: "dax0.1", hg.TAG_C: None, hg.TAG_NV0: "dax1.0",
        hg.TAG_NV1: "dax1.1"}
    assert names(out["untagged"]) == ["dax0.2", "dax0.3", "dax2.0"]
    assert out["rejected"] == []


def test_conflict_is_reported_with_both_devices(make_host):
    make_host("conflict")
    out = list_json()
    [t] = out["tags"]
    assert t["tag"] == hg.TAG_CONFLICT and t["state"] == "conflict"
    assert "device" not in t and "path" not in t
    assert names(t["devices"]) == ["dax0.0", "dax1.0"]
    assert "dax0.0" in t["reason"] and "dax1.0" in t["reason"]
    assert {d["source"] for d in t["devices"]} == {"dcd", "nvdimm"}
    r = run_tagmem("resolve", hg.TAG_CONFLICT)
    assert r.returncode == 4 and r.stdout == "" and "dax0.0" in r.stderr


def test_system_ram_is_listed_but_never_usable(make_host):
    make_host("system-ram")
    [t] = list_json()["tags"]
    assert t["tag"] == hg.TAG_RAM and t["state"] == "system-ram"
    assert t["devices"][0]["mode"] == "system-ram"
    assert "system RAM" in t["reason"]
    r = run_tagmem("resolve", hg.TAG_RAM)
    assert r.returncode == 5 and r.stdout == ""


def test_malformed_devices_are_rejected_one_by_one(make_host):
    make_host("malformed")
    out = list_json()
    states = {t["tag"]: t["state"] for t in out["tags"]}
    assert states.pop(hg.TAG_GOOD) == "ready"
    assert tags_by_uuid(out)[hg.TAG_GOOD]["device"] == "dax0.8"
    # The extents of rejected devices carry tags no usable device claims:
    # offered, never presented with data.
    assert set(states.values()) == {"offered"} and len(states) == 8
    reasons = {r["device"]: r["reason"] for r in out["rejected"]}
    assert sorted(reasons) == [f"dax0.{i}" for i in range(8)]
    assert "not a UUID" in reasons["dax0.0"] and hg.BAD_UUID_TEXT in reasons["dax0.0"]
    assert "not a UUID" in reasons["dax0.1"]
    assert reasons["dax0.2"] == "no device node /dev/dax0.2"
    assert reasons["dax0.3"] == "/dev/dax0.3 is not a character device"
    assert "/dev/dax0.4 is 1:3" in reasons["dax0.4"]
    assert "/dev/dax0.5 is" in reasons["dax0.5"] and "but sysfs says" in reasons["dax0.5"]
    assert "vanished" in reasons["dax0.6"]
    assert "size unreadable" in reasons["dax0.7"]
    # None of the rejected devices' tags resolves to a device.
    for tag in (hg.TAG_BAD_TEXT, hg.TAG_NULL_RDEV, hg.TAG_BLOCK_NODE, hg.TAG_DEV_MISMATCH):
        r = run_tagmem("resolve", tag)
        assert r.returncode == 5 and r.stdout == ""


def _one_dcd_device(**dev_kw) -> hg.Host:
    h = hg.Host()
    r = h.dcd_region(region_id=0, base=0x10_0000_0000, size=4 * GiB)
    r.extent(length=GiB, uuid=hg.TAG_GOOD)
    dev = r.dax(dev_id=0, uuid=hg.TAG_GOOD, **dev_kw)
    return h, dev


def test_consistent_device_numbers_of_another_driver_are_rejected(make_host):
    # sysfs and /dev agree on 1:3 (/dev/null's number): still not a dax device.
    h, dev = _one_dcd_device()
    h.override(dev.path("dev"), "1:3\n")
    h.dev_node(dev.name, kind="c", major=1, minor=3)
    make_host(h)
    out = list_json()
    assert [t["state"] for t in out["tags"]] == ["offered"]
    [rej] = out["rejected"]
    assert "not the kernel's dax major" in rej["reason"]


def test_symlinked_device_node_is_rejected(make_host):
    h, dev = _one_dcd_device()
    h.dev_node(dev.name, kind="symlink", target="/dev/null")
    make_host(h)
    out = list_json()
    assert [t["state"] for t in out["tags"]] == ["offered"]
    assert names(out["rejected"]) == ["dax0.0"]


def test_tag_attribute_zero_means_untagged(make_host):
    h, dev = _one_dcd_device()
    h.override(dev.path("uuid"), "0\n")
    make_host(h)
    out = list_json()
    assert names(out["untagged"]) == ["dax0.0"]
    # The extent's tag is then claimed by no device.
    assert [(t["tag"], t["state"]) for t in out["tags"]] == [(hg.TAG_GOOD, "offered")]


def test_uppercase_tag_attribute_is_canonicalised(make_host):
    h, dev = _one_dcd_device()
    h.override(dev.path("uuid"), hg.TAG_GOOD.upper() + "\n")
    make_host(h)
    [t] = list_json()["tags"]
    assert t["tag"] == hg.TAG_GOOD


def test_garbled_extent_is_a_warning_not_a_rejection(make_host):
    h, dev = _one_dcd_device()
    h.override("devices/platform/ACPI0017:00/root0/decoder0.0/region0/dax_region0/extent0.0/"
               "length", "garbage\n")
    make_host(h)
    [t] = list_json()["tags"]
    assert t["state"] == "ready"
    assert any("extents unreadable" in w for w in t["devices"][0]["warnings"])


def _daxctl_mappings() -> dict[str, list[tuple[int, int]]]:
    """Each device's mappings as libdaxctl reads them: `daxctl list -D -M -i`."""
    res = subprocess.run(["daxctl", "list", "-D", "-M", "-i"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    devices = json.loads(res.stdout) if res.stdout.strip() else []
    if isinstance(devices, dict):
        devices = [devices]
    return {d["chardev"]: sorted((m["start"], m["end"]) for m in d.get("mappings", []))
            for d in devices}


@pytest.mark.parametrize("scenario", ["dcd", "nvdimm", "config-only", "mixed", "system-ram"])
def test_ranges_agree_with_libdaxctl_mappings(make_host, scenario):
    # tagmem reads mappingN itself (libdaxctl leaks its mapping list), so
    # libdaxctl is the referee that its reading is the same.
    make_host(scenario)
    out = list_json()
    ours = {u["device"]: u["ranges"] for u in out["untagged"]}
    for t in out["tags"]:
        for d in t["devices"]:
            ours[d["device"]] = d["ranges"]
    theirs = _daxctl_mappings()
    compared = 0
    for name, maps in theirs.items():
        if not maps or name not in ours:
            continue  # no mappings: tagmem falls back to resource + size
        assert [(r["start"], r["end"]) for r in ours[name]] == maps, name
        assert all(r["size"] == r["end"] - r["start"] + 1 for r in ours[name])
        compared += 1
    assert compared >= 1, f"{scenario}: no device with mappings to compare ({theirs})"
