# SPDX-License-Identifier: Apache-2.0
"""tagmem on real CXL Dynamic Capacity, in QEMU guests (issue 17).

Why: the DCD discovery code was written against synthetic sysfs trees of the
out-of-tree v11 ABI; only the real kernel (the DCD series) and a device that
really sends Add/Release Capacity events (QEMU's CXL type-3 DCD, with tags)
show whether tagmemfs finds tagged capacity as it arrives, claims it, serves
its bytes and lets it go. The guests are dcdkit's (kernel and QEMU from
TAGMEM_DCD_KERNEL / TAGMEM_DCD_QEMU, see docs/dcd.md); the host side drives
the device over QMP while the guest runs.

Scenarios (one CTest entry each):

* qemu_dcd_live: one guest; T1 arrives while `tagmem wait T1` waits, its bytes
  are the host file's; T2 arrives as two extents in one request; T1 again
  (same tag, another range) is dropped by the kernel; a release of the
  claimed T2 and of the offered (unclaimed) T3; T4 offered, then claimed by
  `tagmem claim`; what `tagmem watch` saw.
* qemu_dcd_two_hosts: two guests whose DC regions are one share=on file get
  the same extents with the same tag; both list it, and they ping-pong
  through their mappings of data.
* qemu_dcd_abi: tagmem's view of the raw ABI without any claim: the seed
  device is no tag, an untagged extent is never claimed nor a tag.

Who claims offered capacity: dcdkit.claim_mode() (TAGMEM_DCD_CLAIM, default
dcdkit.DEFAULT_CLAIM): "guest" claims by hand in the scenario (echo tag >
seed uuid; bind), "daemon" leaves it to tagmemfs.
"""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path

import pytest

import dcdkit
import tagmemvm
import vmkit
from tagmemvm import section, section_json

MiB = vmkit.MiB
GiB = vmkit.GiB
GUEST_TIMEOUT_S = 240

T1 = "d1d1d1d1-0017-4000-8000-0000000000d1"
T2 = "d2d2d2d2-0017-4000-8000-0000000000d2"
T3 = "d3d3d3d3-0017-4000-8000-0000000000d3"
T4 = "d4d4d4d4-0017-4000-8000-0000000000d4"
T_SHARED = dcdkit.SHARED_TAG
#: (offset, length) in the DC region = in the backing file.
T1_EXTENTS = [(0, 256 * MiB)]
T1_AGAIN = [(256 * MiB, 128 * MiB)]  # same tag, new range: the kernel must drop it
T2_EXTENTS = [(512 * MiB, 128 * MiB), (768 * MiB, 128 * MiB)]
T3_EXTENTS = [(896 * MiB, 64 * MiB)]
T4_EXTENTS = [(960 * MiB, 64 * MiB)]
UNTAGGED_EXTENTS = [(128 * MiB, 64 * MiB)]
SHARED_EXTENTS = dcdkit.SHARED_EXTENTS
PATTERN_LEN = 64 * 1024
PINGPONG_ROUNDS = 200


def _seed() -> int:
    return random.getrandbits(62) | 1


@pytest.fixture(scope="module")
def dcd():
    """The DCD kernel and QEMU (or a skip, a failure under CI), vmkit assets
    for that kernel, and the product built in the CMake build directory."""
    paths = dcdkit.locate()
    try:
        vmkit.ensure_host_tools()
    except vmkit.QemuUnavailable as exc:
        pytest.skip(f"real CXL DCD tests: {exc}")
    assets = dcdkit.assets(paths)
    try:
        product = tagmemvm.product_binaries(tagmemvm.build_dir(), assets.cache_dir)
    except tagmemvm.ProductMissing as exc:
        pytest.fail(str(exc))
    return paths, assets, product


def _initrd(out: Path, scenario: str, dcd, guest_tools) -> Path:
    _, assets, product = dcd
    return dcdkit.build_initrd(out, scenario, assets=assets, product=product, tools=guest_tools)


def _start(dcd, initrd: Path, files: dcdkit.DcdGuestFiles, name: str, tmp_path: Path,
           nvdimm: vmkit.NvdimmSpec | None = None) -> vmkit.Guest:
    paths, assets, _ = dcd
    return dcdkit.start_guest(paths, assets, initrd, files, name, GUEST_TIMEOUT_S,
                              log_path=tmp_path / f"{name}.log", nvdimm=nvdimm)


def _serve(guest: vmkit.Guest, files: dcdkit.DcdGuestFiles, handlers: dict) -> dcdkit.HostSide:
    return dcdkit.serve(guest, files, handlers, GUEST_TIMEOUT_S)


def _uptimes(res: vmkit.BootResult) -> dict[str, float]:
    """Guest uptime of each DCD-ASK / DCD-EVENT / TM-EVENT line (first one)."""
    out: dict[str, float] = {}
    for kind, what, t in re.findall(r"^(DCD-ASK|DCD-EVENT|TM-EVENT): (.*?) uptime=([\d.]+)",
                                    res.console, re.M):
        out.setdefault(f"{kind} {what}", float(t))
    return out


def _fail_with_context(res: vmkit.BootResult, exc: BaseException):
    if res.oops:
        pytest.fail(f"guest {res.name}: the guest KERNEL OOPSED: {res.oops_summary}\n"
                    f"--- oops ---\n{res.oops}")
    raise exc


def _watch_events(res: vmkit.BootResult) -> list[dict]:
    return [json.loads(line) for line in section(res, "watch").splitlines() if line.strip()]


# --------------------------------------------------------------------------
# a. live: capacity arrives while tagmemfs runs
# --------------------------------------------------------------------------

#: Appended to tagmem.conf (after dcd.sh's [defaults] in guest claim mode).
LIVE_CONF = (f"cat >>/etc/tagmem/tagmem.conf <<'TM_EOF'\n"
             f"# T3 stays offered: the host releases it unclaimed\n"
             f"[tag {T3}]\nclaim = manual\n\n"
             f"# T4 is claimed by `tagmem claim`\n"
             f"[tag {T4}]\nclaim = manual\nTM_EOF\n")


def live_scenario(seeds: dict[str, int]) -> str:
    return f"""
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
dcd_start_answers
dcd_make_region
tm_section devices-start dcd_devices
tm_section extents-start dcd_extents
{LIVE_CONF}tm_start
tm_section ls-start ls -1 $TM_MNT
tagmem watch --json >/tmp/watch.out 2>/tmp/watch.err &
WATCH=$!
( rc=0; tagmem wait {T1} --timeout 120 >/tmp/wait1.out 2>&1 || rc=$?
  echo "DCD-EVENT: wait T1 returned rc=$rc uptime=$(tm_now)"; echo $rc >/tmp/wait1.rc ) &
WAITSH=$!
( until dcd_extents | grep -q " {T1}$"; do sleep 0.05; done
  echo "DCD-EVENT: extent T1 in sysfs uptime=$(tm_now)" ) &
( until ls -1 $TM_MNT | grep -qx {T1}; do sleep 0.05; done
  echo "DCD-EVENT: T1 listed uptime=$(tm_now)" ) &
sleep 1
echo "DCD-EVENT: waiting for T1 uptime=$(tm_now)"
dcd_ask add T1
dcd_claim_unless_daemon {T1}
wait $WAITSH
tm_section wait1 cat /tmp/wait1.out
[ "$(cat /tmp/wait1.rc)" = 0 ]
tm_section ls-T1 ls -1 $TM_MNT
tm_section extents-T1 dcd_extents
tm_section devices-T1 dcd_devices
tm_show {T1}
tm_section state-T1 dcd_state {T1}
daxmap verify $TM_MNT/{T1}/data {seeds['host']:#x} {PATTERN_LEN} 1M
echo "DCD-EVENT: read the host's pattern at 1 MiB uptime=$(tm_now)"
daxmap write $TM_MNT/{T1}/data {seeds['guest']:#x} {PATTERN_LEN} 2M
echo "DCD-EVENT: wrote the guest's pattern at 2 MiB uptime=$(tm_now)"
cp $TM_MNT/{T1}/metadata /tmp/T1.before

# T2: two extents in one request, one device.
( until ls -1 $TM_MNT | grep -qx {T2}; do sleep 0.05; done
  echo "DCD-EVENT: T2 listed uptime=$(tm_now)" ) &
dcd_ask add T2
dcd_claim_unless_daemon {T2}
tagmem wait {T2} --timeout 60
dcd_until "dcd_state {T2}" ready 30
tm_section extents-T2 dcd_extents
tm_section devices-T2 dcd_devices
tm_show {T2}

# T1 again, another range: the kernel keeps tags unique on the host.
dcd_ask readd T1
sleep 5
tm_section extents-readd dcd_extents
tm_section devices-readd dcd_devices
tm_section metadata-T1-after-readd cat $TM_MNT/{T1}/metadata
if cmp -s /tmp/T1.before $TM_MNT/{T1}/metadata; then
    echo "DCD-RESULT: T1 unchanged after the re-add"
else
    echo "DCD-RESULT: T1 changed after the re-add"
fi

# Release of the claimed T2: refused by the kernel while dax holds it;
# tagmemfs marks it asked back (metadata, a watch event, wait).
( rc=0; tagmem wait --release-requested {T2} --timeout 60 >/tmp/rel.out 2>&1 || rc=$?
  echo "DCD-EVENT: wait --release-requested T2 returned rc=$rc uptime=$(tm_now)" ) &
RELWAIT=$!
dcd_ask release T2
wait $RELWAIT
sleep 2
tm_section extents-release-T2 dcd_extents
tm_section devices-release-T2 dcd_devices
tm_section state-T2-after-release dcd_state {T2}
tm_section ls-release-T2 ls -1 $TM_MNT
tm_section wait-release-T2 cat /tmp/rel.out
tm_section metadata-T2-after-release cat $TM_MNT/{T2}/metadata
# The way back: refused while T2's data is open, then the device goes and
# the extents are offered (not claimed again: they were asked back).
exec 7<$TM_MNT/{T2}/data
rc=0; tagmem unclaim {T2} >/tmp/unclaim1.out 2>&1 || rc=$?
echo "DCD-RESULT: unclaim T2 while open rc=$rc"
tm_section unclaim-T2-open cat /tmp/unclaim1.out
exec 7<&-
tm_section state-T2-after-refusal dcd_state {T2}
rc=0; tagmem unclaim {T2} >/tmp/unclaim2.out 2>&1 || rc=$?
echo "DCD-RESULT: unclaim T2 rc=$rc"
tm_section unclaim-T2 cat /tmp/unclaim2.out
dcd_until "dcd_state {T2}" offered 30
sleep 2
tm_section state-T2-unclaimed dcd_state {T2}
tm_section devices-T2-unclaimed dcd_devices
tm_section metadata-T2-unclaimed cat $TM_MNT/{T2}/metadata
dcd_ask rerelease T2
i=0
while ls -1 $TM_MNT | grep -qx {T2}; do
    i=$((i + 1)); [ $i -lt 300 ] || {{ echo "T2 still listed 30 s after its second release"; exit 1; }}
    sleep 0.1
done
echo "DCD-EVENT: T2 gone uptime=$(tm_now)"
tm_section extents-T2-gone dcd_extents

# T3 stays offered (claim = manual for it, or no daemon claim at all), then goes.
dcd_ask add T3
dcd_wait_extent {T3} 60
dcd_until "dcd_state {T3}" offered 30
echo "DCD-EVENT: T3 offered uptime=$(tm_now)"
tm_section metadata-T3 cat $TM_MNT/{T3}/metadata
tm_section ls-T3 ls -1 $TM_MNT/{T3}
tm_section devices-T3 dcd_devices
dcd_ask release T3
i=0
while ls -1 $TM_MNT | grep -qx {T3}; do
    i=$((i + 1)); [ $i -lt 300 ] || {{ echo "T3 still listed 30 s after its release"; exit 1; }}
    sleep 0.1
done
echo "DCD-EVENT: T3 gone uptime=$(tm_now)"

# T4: offered (claim = manual), then claimed by `tagmem claim` (by hand
# without a daemon claim).
dcd_ask add T4
dcd_wait_extent {T4} 60
dcd_until "dcd_state {T4}" offered 30
if [ "$DCD_CLAIM" = daemon ]; then
    rc=0; tagmem claim {T4} >/tmp/claim.out 2>&1 || rc=$?
    tm_section claim-T4 cat /tmp/claim.out
    echo "DCD-RESULT: tagmem claim T4 rc=$rc"
else
    dcd_claim {T4}
fi
tagmem wait {T4} --timeout 30
dcd_until "dcd_state {T4}" ready 30
echo "DCD-EVENT: T4 ready uptime=$(tm_now)"
tm_section metadata-T4 cat $TM_MNT/{T4}/metadata
tm_section extents-end dcd_extents
tm_section ls-end ls -1 $TM_MNT
sleep 1
kill -TERM $WATCH
wait $WATCH || true
tm_section watch cat /tmp/watch.out
tm_section watch-err cat /tmp/watch.err
tm_section dmesg-cxl sh -c 'dmesg | grep -iE "cxl|dax|extent|tag" | tail -n 60'
tm_stop
"""


def test_dcd_live(dcd, guest_tools, vm_timings, tmp_path):
    seeds = {"host": _seed(), "guest": _seed()}
    files = dcdkit.DcdGuestFiles(tmp_path / "dc.img", tmp_path / "qmp.sock", tmp_path / "ctl.sock")
    dcdkit.backing_file(files.backing)
    t1_off = T1_EXTENTS[0][0]
    dcdkit.write_at(files.backing, t1_off + 1 * MiB, vmkit.daxmap_pattern(seeds["host"], PATTERN_LEN))
    initrd = _initrd(tmp_path / "live.cpio", live_scenario(seeds), dcd, guest_tools)
    guest = _start(dcd, initrd, files, "dcd-live", tmp_path)
    try:
        host = _serve(guest, files, {
            "add T1": lambda q: lambda: q.add_capacity(T1, T1_EXTENTS),
            "add T2": lambda q: lambda: q.add_capacity(T2, T2_EXTENTS),
            "readd T1": lambda q: lambda: q.add_capacity(T1, T1_AGAIN),
            "release T2": lambda q: lambda: q.release_capacity(T2, T2_EXTENTS),
            "rerelease T2": lambda q: lambda: q.release_capacity(T2, T2_EXTENTS),
            "add T3": lambda q: lambda: q.add_capacity(T3, T3_EXTENTS),
            "release T3": lambda q: lambda: q.release_capacity(T3, T3_EXTENTS),
            "add T4": lambda q: lambda: q.add_capacity(T4, T4_EXTENTS),
        })
    finally:
        res = guest.wait()
    vm_timings["dcd live guest"] = res.summary()
    try:
        _check_live(res, host, files, seeds, vm_timings)
    except (AssertionError, vmkit.VmError) as exc:
        _fail_with_context(res, exc)


def _check_live(res, host, files, seeds, vm_timings) -> None:
    assert res.oops is None, res.oops
    up = _uptimes(res)
    assert "tagmemfs mounted" in " ".join(up), res.tail()
    # T1: listed, size, metadata, device, bytes.
    assert T1 in section(res, "ls-T1").split()
    assert section(res, f"size-{T1}").strip() == str(256 * MiB)
    meta = section_json(res, f"metadata-{T1}")
    assert (meta["tag"], meta["source"], meta["state"], meta["size"]) == (
        T1, "dcd", "ready", 256 * MiB), meta
    dev = section(res, f"dev-{T1}").strip()
    assert re.fullmatch(r"/dev/dax\d+\.\d+", dev), dev
    assert [(e["offset"], e["length"]) for d in meta["devices"] for e in d["extents"]] == \
        T1_EXTENTS, meta
    got = tagmemvm.read_at(files.backing, T1_EXTENTS[0][0] + 2 * MiB, PATTERN_LEN)
    assert got == vmkit.daxmap_pattern(seeds["guest"], PATTERN_LEN), \
        "the guest's write through data is not in the backing file at T1 + 2 MiB"
    # T2: one device, two extents, 256 MiB.
    m2 = section_json(res, f"metadata-{T2}")
    assert (m2["state"], m2["size"], len(m2["devices"])) == ("ready", 256 * MiB, 1), m2
    assert sorted((e["offset"], e["length"]) for e in m2["devices"][0]["extents"]) == T2_EXTENTS
    # T1 again: dropped by the kernel, T1 unchanged.
    assert "DCD-RESULT: T1 unchanged after the re-add" in res.console
    ext_readd = section(res, "extents-readd")
    assert sum(1 for ln in ext_readd.splitlines() if ln.endswith(T1)) == 1, ext_readd
    # T3: offered, then gone after its release.
    m3 = section_json(res, "metadata-T3")
    assert (m3["tag"], m3["state"], m3["source"], m3["devices"]) == (T3, "offered", "dcd", []), m3
    assert [(e["offset"], e["length"]) for e in m3["extents"]] == T3_EXTENTS, m3
    assert "data" not in section(res, "ls-T3").split(), "an offered tag has no data"
    assert "DCD-EVENT T3 gone" in up, up
    assert T3 not in section(res, "ls-end").split()
    # T4: claimed by `tagmem claim` (exit 0), one device with its extent.
    if dcdkit.claim_mode() == "daemon":
        assert "DCD-RESULT: tagmem claim T4 rc=0" in res.console, section(res, "claim-T4")
    m4 = section_json(res, "metadata-T4")
    assert (m4["state"], m4["size"]) == ("ready", T4_EXTENTS[0][1]), m4
    assert [(e["offset"], e["length"]) for d in m4["devices"] for e in d["extents"]] == \
        T4_EXTENTS, m4
    # What tagmem watch saw: T1 and T2 become ready once each (no flapping
    # through another state), T3 is offered, then removed.
    events = _watch_events(res)
    by_tag: dict[str, list[tuple[str, str]]] = {}
    for ev in events:
        by_tag.setdefault(ev.get("tag", "?"), []).append((ev["event"], ev.get("state", "")))
    vm_timings["dcd live watch"] = json.dumps(by_tag)

    def became_ready(seq: list[tuple[str, str]]) -> int:
        states = [st for _, st in seq]
        return sum(1 for i, st in enumerate(states)
                   if st == "ready" and (i == 0 or states[i - 1] != "ready"))
    assert became_ready(by_tag.get(T1, [])) == 1, by_tag
    assert became_ready(by_tag.get(T2, [])) == 1, by_tag
    assert ("release-requested", "ready") in by_tag.get(T2, []), by_tag
    assert by_tag[T2][-1] == ("removed", "offered"), by_tag
    # T3's release may be seen before its extents go (a release-requested
    # line) or after (none): the trace and the extent poll race.
    assert [e for e in by_tag.get(T3, []) if e[0] != "release-requested"] == [
        ("added", "offered"), ("removed", "offered")], by_tag
    assert became_ready(by_tag.get(T4, [])) == 1 and by_tag[T4][0] == ("added", "offered"), by_tag
    assert set(by_tag) == {T1, T2, T3, T4}, by_tag
    # The release of the claimed T2: the kernel keeps device and extents
    # (recorded below); tagmem keeps T2 ready and says it was asked back.
    assert section(res, "state-T2-after-release").strip() == "ready"
    assert T2 in section(res, "ls-release-T2").split()
    assert "DCD-EVENT wait --release-requested T2 returned rc=0" in up, up
    rel = json.loads(section(res, "wait-release-T2"))
    assert (rel["tag"], rel["event"], rel["state"]) == (T2, "release-requested", "ready"), rel
    m2r = section_json(res, "metadata-T2-after-release")
    assert m2r["state"] == "ready" and re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", m2r.get("release_requested", "")), m2r
    # tagmem unclaim: refused while open (exit 12, T2 still ready), then the
    # device goes, the extents are offered, the second release removes T2.
    assert "DCD-RESULT: unclaim T2 while open rc=12" in res.console, section(res, "unclaim-T2-open")
    assert "in use" in section(res, "unclaim-T2-open")
    assert section(res, "state-T2-after-refusal").strip() == "ready"
    assert "DCD-RESULT: unclaim T2 rc=0" in res.console, section(res, "unclaim-T2")
    assert section(res, "state-T2-unclaimed").strip() == "offered", section(res, "devices-T2-unclaimed")
    m2u = section_json(res, "metadata-T2-unclaimed")
    assert m2u["release_requested"] == m2r["release_requested"], m2u
    assert sorted((e["offset"], e["length"]) for e in m2u["extents"]) == T2_EXTENTS, m2u
    assert "DCD-EVENT T2 gone" in up, up
    assert not any(ln.endswith(T2) for ln in section(res, "extents-T2-gone").splitlines())
    # What the release of a claimed tag did (recorded, not assumed).
    vm_timings["dcd release of claimed T2"] = (
        f"state after: {section(res, 'state-T2-after-release').strip()!r}; extents: "
        + "; ".join(section(res, "extents-release-T2").split("\n")))
    t0 = up.get("DCD-ASK add T1")
    for key in ("DCD-EVENT extent T1 in sysfs", "DCD-EVENT T1 listed",
                "DCD-EVENT wait T1 returned rc=0"):
        if t0 is not None and key in up:
            vm_timings[f"dcd live ask->{key[10:]}"] = f"{up[key] - t0:.2f}s"
    res.check()


# --------------------------------------------------------------------------
# b. two hosts: one DC file, the same extents and tag on both
# --------------------------------------------------------------------------


def test_dcd_two_hosts(dcd, guest_tools, vm_timings, tmp_path):
    paths, assets, _ = dcd
    initrd = _initrd(tmp_path / "two.cpio", dcdkit.two_hosts_scenario(PINGPONG_ROUNDS), dcd,
                     guest_tools)
    t0 = time.monotonic()
    (a, b), errors = dcdkit.run_two_hosts(paths, assets, initrd, tmp_path, GUEST_TIMEOUT_S)
    vm_timings["dcd two hosts wall"] = f"{time.monotonic() - t0:.1f}s"
    vm_timings["dcd host A"] = a.summary()
    vm_timings["dcd host B"] = b.summary()
    if errors:
        raise errors[0]
    try:
        metas = {}
        for res in (a, b):
            assert res.oops is None, res.oops
            meta = section_json(res, f"metadata-{T_SHARED}")
            assert (meta["tag"], meta["source"], meta["state"], meta["size"]) == (
                T_SHARED, "dcd", "ready", SHARED_EXTENTS[0][1]), meta
            assert [(e["offset"], e["length"]) for d in meta["devices"]
                    for e in d["extents"]] == SHARED_EXTENTS, meta
            metas[res.name] = meta
        ping, pong = tagmemvm.parse_pingpong(a), tagmemvm.parse_pingpong(b)
        assert (ping.role, pong.role) == ("ping", "pong")
        n = PINGPONG_ROUNDS
        assert ping.messages == [f"pong #{k} <- ping #{k}" for k in range(1, n + 1)]
        assert pong.messages == [f"ping #{k}" for k in range(1, n + 1)]
        r = ping.rtt_us
        vm_timings[f"dcd pingpong {n} round trips"] = (
            f"{ping.seconds:.2f}s, rtt median {r['median']:.0f}us p99 {r['p99']:.0f}us "
            f"(handshake after {ping.connected_after_s:.1f}s)")
        a.check()
        b.check()
    except (AssertionError, vmkit.VmError) as exc:
        _fail_with_context(a if a.oops else b, exc)


# --------------------------------------------------------------------------
# c. the raw ABI as tagmem sees it, without claiming
# --------------------------------------------------------------------------

NV_TAG = "d6d6d6d6-0017-4000-8000-0000000000d6"
NULL_UUID = "00000000-0000-0000-0000-000000000000"


def abi_scenario() -> str:
    return f"""
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
dcd_start_answers
# An NVDIMM namespace tagged NV_TAG on the same kernel (labels made here).
# (CXL regions are on another bus, but let ndctl pick the names.)
tm_section nd-regions ndctl list -R
ndctl disable-region all
ndctl init-labels -f all
ndctl enable-region all
ndctl create-namespace -m devdax -M mem --uuid {NV_TAG} -a 2M -s 256M
vmkit_settle
NV_DEV=$(vmkit_dax_for_tag {NV_TAG})
tm_section nv-uuid cat /sys/bus/dax/devices/${{NV_DEV#/dev/}}/uuid
dcd_make_region
tm_section devices-start dcd_devices
tm_start
tm_section ls-start ls -1 $TM_MNT
tm_section list-start tagmem list --json
dcd_ask add untagged
d_i=0
until [ -n "$(dcd_extents)" ]; do
    d_i=$((d_i + 1)); [ $d_i -lt 600 ] || {{ echo "no extent after the untagged add"; exit 1; }}
    sleep 0.1
done
echo "DCD-EVENT: untagged extent in sysfs uptime=$(tm_now)"
tm_section extent-files sh -c 'for e in '"$(dcd_dax_region)"'/extent*; do ls $e; done'
# Long enough for a daemon that would claim it to have done so.
sleep 8
tm_section extents-untagged dcd_extents
tm_section devices-untagged dcd_devices
tm_section ls-untagged ls -1 $TM_MNT
tm_section list-untagged tagmem list --json
rc=0; tagmem show {NULL_UUID} >/dev/null 2>&1 || rc=$?
echo "DCD-RESULT: show null uuid rc=$rc"
tm_section dmesg-cxl sh -c 'dmesg | grep -iE "cxl|dax|extent|tag" | tail -n 40'
tm_stop
"""


def test_dcd_abi(dcd, guest_tools, vm_timings, tmp_path):
    files = dcdkit.DcdGuestFiles(tmp_path / "dc.img", tmp_path / "qmp.sock", tmp_path / "ctl.sock")
    dcdkit.backing_file(files.backing)
    nv = vmkit.NvdimmSpec(tmp_path / "nv.img", "1G")
    initrd = _initrd(tmp_path / "abi.cpio", abi_scenario(), dcd, guest_tools)
    guest = _start(dcd, initrd, files, "dcd-abi", tmp_path, nvdimm=nv)
    try:
        _serve(guest, files, {
            "add untagged": lambda q: lambda: q.add_capacity(None, UNTAGGED_EXTENTS)})
    finally:
        res = guest.wait()
    vm_timings["dcd abi guest"] = res.summary()
    try:
        assert res.oops is None, res.oops
        # The seed: a 0-size device with the null uuid, no driver, no tag.
        dev0 = section(res, "devices-start").split()
        assert dev0[1:] == ["0", NULL_UUID], dev0
        # The untagged extent: offset and length, no uuid file at all.
        ext = section(res, "extents-untagged").split()
        assert (int(ext[1], 0), int(ext[2], 0), ext[3]) == (*UNTAGGED_EXTENTS[0], "-"), ext
        assert sorted(section(res, "extent-files").split()) == ["length", "offset", "uevent"]
        # ... never claimed: every DC device is still a 0-size seed with the null uuid.
        devs = section(res, "devices-untagged").splitlines()
        assert devs and all(d.split()[1:3] == ["0", NULL_UUID] for d in devs), \
            f"the untagged extent was claimed: {devs}"
        # ... and never a tag; the null UUID is no tag either.
        for when in ("start", "untagged"):
            listed = section_json(res, f"list-{when}")
            assert NULL_UUID not in [t["tag"] for t in listed["tags"]], listed
            assert dev0[0] in [u["device"] for u in listed["untagged"]], listed
            assert NULL_UUID not in section(res, f"ls-{when}").split()
        assert "DCD-RESULT: show null uuid rc=0" not in res.console
        # The NVDIMM namespace's dax device has a uuid attribute on this kernel
        # too (every dax device has one), reading the null UUID: it must not
        # hide the namespace's tag.
        assert section(res, "nv-uuid").strip() == NULL_UUID
        for when in ("start", "untagged"):
            listed = section_json(res, f"list-{when}")
            assert section(res, f"ls-{when}").split() == [NV_TAG] and \
                [t["tag"] for t in listed["tags"]] == [NV_TAG], (
                f"the NVDIMM namespace tag {NV_TAG} is hidden ({when}): its dax device's null "
                f"uuid attribute makes tagmem read it as an untagged DC device; "
                f"untagged: {listed['untagged']}")
        res.check()
    except (AssertionError, vmkit.VmError) as exc:
        _fail_with_context(res, exc)


# --------------------------------------------------------------------------
# d. poison: a memory error in DC capacity reaches the tag's health
# --------------------------------------------------------------------------

T5 = "d5d5d5d5-0017-4000-8000-0000000000d5"
#: Away from offset 0, so that a wrong DPA-to-offset mapping cannot pass.
T5_EXTENTS = [(384 * MiB, 128 * MiB)]
#: The device has only DC capacity: DC region 0 starts at DPA 0, and an
#: extent at region offset O is DPA O.
POISON_OFFSET = 3 * MiB  # within T5's data
POISON_LEN = 64


def poison_scenario() -> str:
    return f"""
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
dcd_start_answers
dcd_make_region
tm_start
dcd_ask add T5
dcd_claim_unless_daemon {T5}
tagmem wait {T5} --timeout 120
tm_section health-before sh -c 'tagmem show --json {T5}'
tagmem watch --json >/tmp/watch.out 2>/tmp/watch.err &
WATCH=$!
( rc=0; tagmem wait --degraded {T5} --timeout 120 >/tmp/deg.out 2>&1 || rc=$?
  echo $rc >/tmp/deg.rc ) &
DEG=$!
sleep 1
dcd_ask poison T5
echo "DCD-EVENT: poison injected uptime=$(tm_now)"
# The device raises no event for an injected error: the poison list is read
# at start, at SIGHUP and after lost events; this is the SIGHUP.
tm_reload
wait $DEG
echo "DCD-EVENT: wait --degraded returned rc=$(cat /tmp/deg.rc) uptime=$(tm_now)"
tm_section degraded cat /tmp/deg.out
tm_section metadata-after cat $TM_MNT/{T5}/metadata
sleep 1
kill $WATCH
tm_section watch cat /tmp/watch.out
tm_stop
"""


def test_dcd_poison(dcd, guest_tools, vm_timings, tmp_path):
    """cxl-inject-poison on the DC device: the kernel's poison list read
    (cxl_poison trace events) degrades the tag at the error's offset within
    its data, in metadata, `tagmem wait --degraded` and the watch stream."""
    files = dcdkit.DcdGuestFiles(tmp_path / "dc.img", tmp_path / "qmp.sock", tmp_path / "ctl.sock")
    dcdkit.backing_file(files.backing)
    dpa = T5_EXTENTS[0][0] + POISON_OFFSET
    initrd = _initrd(tmp_path / "poison.cpio", poison_scenario(), dcd, guest_tools)
    guest = _start(dcd, initrd, files, "dcd-poison", tmp_path)
    try:
        _serve(guest, files, {
            "add T5": lambda q: lambda: q.add_capacity(T5, T5_EXTENTS),
            "poison T5": lambda q: lambda: q.inject_poison(dpa, POISON_LEN),
        })
    finally:
        res = guest.wait()
    vm_timings["dcd poison guest"] = res.summary()
    try:
        assert res.oops is None, res.oops
        before = section_json(res, "health-before")
        assert before["health"]["status"] == "ok", before
        assert "DCD-EVENT: wait --degraded returned rc=0" in res.console
        after = json.loads(section(res, "metadata-after"))
        health = after["health"]
        assert health["status"] == "degraded", after
        assert [(r["offset"], r["length"]) for r in health["bad_ranges"]] == \
            [(POISON_OFFSET, POISON_LEN)], health
        degraded = json.loads(section(res, "degraded"))
        assert (degraded["tag"], degraded["health"]) == (T5, "degraded"), degraded
        assert [(r["offset"], r["length"]) for r in degraded["bad_ranges"]] == \
            [(POISON_OFFSET, POISON_LEN)], degraded
        events = [e for e in _watch_events(res) if e.get("tag") == T5]
        assert any(e["event"] == "health" and e.get("health") == "degraded" for e in events), \
            events
        res.check()
    except (AssertionError, vmkit.VmError) as exc:
        _fail_with_context(res, exc)
