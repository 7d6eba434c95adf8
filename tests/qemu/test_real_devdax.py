# SPDX-License-Identifier: Apache-2.0
"""tagmem and tagmemfs on real device-dax devices, in QEMU guests (issue 4).

Why: synthetic sysfs trees prove the discovery logic; only a real kernel
proves the product. Each test boots throwaway guests (vmkit) whose emulated
NVDIMMs carry devdax namespaces, runs the real tagmem and tagmemfs there, and
checks from the host what they printed and what reached the backing files.

1. one host, real devices: two tagged namespaces and one untagged namespace
   named only by tagmem.conf; the mount, its files, and the data path both
   ways, down to the bytes in the host's backing file;
2. two hosts on one share=on backing file resolve one tag and ping-pong
   through their mappings of /run/tagmem/<tag>/data;
3. access: an unprivileged uid gets EACCES on data until tagmem.conf grants
   that one tag (applied by SIGHUP), and the grant opens no other;
4. daemon death: kill -9 of tagmemfs leaves mappings intact; a restart
   detaches the stale mount and serves again.

Every guest ends with `kill -TERM tagmemfs`, which must unmount and exit 0,
and no guest kernel may oops. Guests have bounded timeouts; a kernel oops
kills the guest after a short grace (vmkit.OOPS_GRACE_S).
"""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path
from typing import Callable

import pytest

import tagmemvm
import vmkit
from tagmemvm import section, section_json

MiB = vmkit.MiB
ALIGN = 2 * MiB
GUEST_TIMEOUT_S = 180

# Scenario 1: two namespaces carry tags; the label-less NVDIMM carries none.
S1_TAG_A = "a1a1a1a1-0001-4000-8000-0000000000a1"
S1_TAG_B = "b2b2b2b2-0001-4000-8000-0000000000b2"
S1_TAG_C = "c3c3c3c3-0001-4000-8000-0000000000c3"  # only by configuration
S1_NAME_C = "config-only-pool"
S1_LEN = 16 * MiB
# Scenario 3 and 4: one NVDIMM, two tags each.
S3_TAGS = ("a1a1a1a1-0003-4000-8000-0000000000a1", "b2b2b2b2-0003-4000-8000-0000000000b2")
S4_TAGS = ("a1a1a1a1-0004-4000-8000-0000000000a1", "b2b2b2b2-0004-4000-8000-0000000000b2")
USER_UID = 1000  # "user" in the guest's /etc/passwd
PINGPONG_ROUNDS = 1000


def _seed() -> int:
    return random.getrandbits(62) | 1  # fresh per run: an old run's bytes cannot match


def _image(assets: vmkit.Assets, name: str) -> Path:
    return assets.cache_dir / "images" / name


def _record(vm_timings, label: str, res: vmkit.BootResult) -> None:
    boot = f"{res.userland_s:.1f}s" if res.userland_s is not None else "?"
    scen = f"{res.scenario_s:.1f}s" if res.scenario_s is not None else "?"
    vm_timings[label] = f"boot to /init {boot}, scenario {scen}, guest total {res.elapsed_s:.1f}s"


def _verify(check: Callable[[], None], *results: vmkit.BootResult) -> None:
    """Run a scenario's assertions (``check``), then demand a clean end of
    every guest. A failing assertion in a guest whose kernel oopsed is
    reported as the oops, since that is what broke it."""
    try:
        check()
    except (AssertionError, vmkit.VmError, pytest.fail.Exception) as exc:
        for r in results:
            if r.oops:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                pytest.fail(f"guest {r.name}: the guest KERNEL OOPSED: {r.oops_summary}\n"
                            f"then this check failed: {first}\n"
                            f"milestones reached: {tagmemvm.events(r)}\n--- oops ---\n{r.oops}")
        raise
    for r in results:
        _assert_clean_end(r)


def _assert_clean_end(res: vmkit.BootResult) -> None:
    """tagmemfs unmounted on SIGTERM with exit 0, the scenario passed, and
    the kernel never oopsed. Checked after the scenario's own assertions so
    that a failure here says the scenario itself worked."""
    if res.oops:
        pytest.fail(f"guest {res.name}: every check of this scenario passed, but the guest "
                    f"KERNEL OOPSED: {res.oops_summary}\n"
                    f"milestones reached: {tagmemvm.events(res)}\n--- oops ---\n{res.oops}")
    assert any(e.startswith("tagmemfs exited rc=0") for e in tagmemvm.events(res)), \
        f"tagmemfs did not exit 0 on SIGTERM: {tagmemvm.events(res)}\n{res.tail()}"
    res.check()


def _sysfs_facts(res: vmkit.BootResult, dev: str) -> dict[str, str]:
    """What the guest's sysfs says about /dev/daxX.Y (tm_sysfs in the scenario)."""
    text = section(res, f"sysfs-{dev.rsplit('/', 1)[-1]}")
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


SYSFS_SNIPPET = r"""
tm_sysfs() { # /dev/daxX.Y: facts from sysfs, not from tagmem
    d=/sys/bus/dax/devices/${1##*/}
    echo "dev=$(cat $d/dev)"
    echo "size=$(cat $d/size)"
    echo "align=$(cat $d/align)"
    echo "resource=$(cat $d/resource)"
    echo "target_node=$(cat $d/target_node)"
    echo "numa_node=$(cat $d/numa_node)"
    echo "chr=$(stat -c '%t:%T' $1)"
}
"""


# --------------------------------------------------------------------------
# 1. one host, real devices
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s1_nvdimms(vm_assets, vm_timings):
    """NVDIMM 0: labels, two tagged 256 MiB namespaces, NUMA node 1.
    NVDIMM 1: no label area; its "io" namespace converted to devdax, so its
    dax device has no UUID; NUMA node 0."""
    tagged = vmkit.NvdimmSpec(_image(vm_assets, "s1-tagged.img"), "1G", node=1)
    plain = vmkit.NvdimmSpec(_image(vm_assets, "s1-labelless.img"), "1G", label_size=0, node=0)
    t0 = time.monotonic()
    r1 = vmkit.prepare_nvdimm(tagged, [S1_TAG_A, S1_TAG_B], "256M", assets=vm_assets)
    r2 = vmkit.prepare_labelless_devdax(plain, assets=vm_assets)
    vm_timings["s1 prepare images"] = (f"{time.monotonic() - t0:.1f}s "
                                       f"({sum(r is not None for r in (r1, r2))} boot(s))")
    return tagged, plain


def test_one_host_real_devices(vm_assets, product, guest_tools, s1_nvdimms, vm_timings,
                               tmp_path):
    tagged, plain = s1_nvdimms
    seeds = {"A": _seed(), "B": _seed(), "C": _seed()}
    scenario = SYSFS_SNIPPET + f"""
TAG_A={S1_TAG_A}; TAG_B={S1_TAG_B}; TAG_C={S1_TAG_C}
A=$(vmkit_dax_for_tag $TAG_A)
B=$(vmkit_dax_for_tag $TAG_B)
C=$(tm_dax_without_uuid)
R=$(tm_dax_range $C)
echo "TM-DEVS A=$A B=$B C=$C range=$R"
for d in $A $B $C; do tm_section sysfs-${{d##*/}} tm_sysfs $d; done
tm_section list-before tagmem list --json
cat >$TM_CONF <<EOF
# The label-less NVDIMM's dax device carries no UUID: only this names it.
[tag $TAG_C]
name = {S1_NAME_C}
match-range = $R
EOF
tm_start
tm_show $TAG_A $TAG_B $TAG_C
tm_section ls-names ls -1 $TM_MNT

# Write through the tag, read the device; write the device, read the tag.
daxmap write $TM_MNT/$TAG_A/data {seeds['A']:#x} {S1_LEN}
daxmap verify $A {seeds['A']:#x} {S1_LEN}
daxmap write $B {seeds['B']:#x} {S1_LEN}
daxmap verify $TM_MNT/$TAG_B/data {seeds['B']:#x} {S1_LEN}
daxmap write $TM_MNT/$TAG_C/data {seeds['C']:#x} {S1_LEN}
daxmap verify $C {seeds['C']:#x} {S1_LEN}
echo "TM-EVENT: data path checked"
tm_stop
"""
    initrd = tagmemvm.build_initrd(tmp_path / "s1.cpio", scenario, assets=vm_assets,
                                   product=product, tools=guest_tools)
    res = vmkit.boot(initrd, [tagged, plain], timeout_s=GUEST_TIMEOUT_S, name="s1",
                     extra_args=vmkit.numa_args("1G", 2, 2), log_path=tmp_path / "s1.log",
                     assets=vm_assets)
    _record(vm_timings, "s1 one host", res)

    def check() -> None:
        m = re.search(r"^TM-DEVS A=(\S+) B=(\S+) C=(\S+) range=0x([0-9a-f]+)-0x([0-9a-f]+)$",
                      res.console, re.M)
        assert m, res.tail()
        dev = {"A": m.group(1), "B": m.group(2), "C": m.group(3)}
        c_range = (int(m.group(4), 16), int(m.group(5), 16))
        tags = {"A": S1_TAG_A, "B": S1_TAG_B, "C": S1_TAG_C}
        node = {"A": tagged.node, "B": tagged.node, "C": plain.node}

        # Before any configuration: two tags, and the label-less device untagged.
        before = section_json(res, "list-before")
        assert {t["tag"] for t in before["tags"]} == {S1_TAG_A, S1_TAG_B}
        untagged = {u["device"]: u for u in before["untagged"]}
        c_name = dev["C"].rsplit("/", 1)[-1]
        assert set(untagged) == {c_name}, before["untagged"]
        assert [(r["start"], r["end"]) for r in untagged[c_name]["ranges"]] == [c_range]

        # The mount lists exactly the three tags; tagmem list agrees.
        assert section(res, "ls-names").split() == sorted(tags.values())
        after = section_json(res, "list-json")
        assert {t["tag"] for t in after["tags"]} == set(tags.values())
        assert after["untagged"] == [] and after["rejected"] == [] and after["config_errors"] == []

        regions = {ln.split()[0]: int(ln.split()[1], 16)
                   for ln in section(res, "regions").splitlines()}
        images = {"A": tagged.path, "B": tagged.path, "C": plain.path}
        for k, tag in tags.items():
            sysfs = _sysfs_facts(res, dev[k])
            size, start = int(sysfs["size"]), int(sysfs["resource"], 16)
            major, minor = (int(x) for x in sysfs["dev"].split(":"))
            assert section(res, f"size-{tag}").strip() == str(size)
            assert section(res, f"shareable-{tag}").strip() == "0"  # the default
            assert section(res, f"dev-{tag}").strip() == dev[k]
            assert section(res, f"resolve-{tag}").strip() == dev[k]
            # data: a character device with the dax device's number, root 0600.
            kind, owner, mode, rdev = section(res, f"stat-{tag}").strip().split("|")
            assert (kind, owner, mode) == ("character special file", "0:0", "600")
            assert rdev == sysfs["chr"] == f"{major:x}:{minor:x}"

            meta = section_json(res, f"metadata-{tag}")
            shown = section_json(res, f"show-{tag}")  # as root: with the ranges
            assert meta == tagmemvm.without_ranges(shown), \
                "metadata differs from tagmem show --json (as root, minus ranges)"
            assert section(res, f"metadata-{tag}").replace("\r", "").strip() == json.dumps(
                meta, indent=2, ensure_ascii=False), "metadata is not dump(2) of itself"
            assert meta["tag"] == tag and meta["state"] == "ready"
            assert meta["source"] == ("config" if k == "C" else "nvdimm")
            assert meta["align"] == ALIGN == int(sysfs["align"])
            assert meta["size"] == size and size % ALIGN == 0
            assert meta["path"] == dev[k] and meta["device"] == dev[k].rsplit("/", 1)[-1]
            assert meta["access"] == {"owner": "root", "group": "root", "uid": 0, "gid": 0,
                                      "mode": "0600"}
            [d] = meta["devices"]
            assert d["path"] == dev[k] and (d["major"], d["minor"]) == (major, minor)
            assert d["size"] == size and d["align"] == ALIGN and d["mode"] == "devdax"
            assert "ranges" not in d  # root-only in sysfs, so not in world-readable metadata
            assert shown["devices"][0]["ranges"] == [
                {"start": start, "end": start + size - 1, "size": size}]
            assert d["target_node"] == int(sysfs["target_node"]) == node[k]
            assert d["numa_node"] == int(sysfs["numa_node"]) == node[k]
            if k == "C":
                assert meta["name"] == S1_NAME_C
                assert (start, start + size - 1) == c_range
                assert "infoblock_uuid" not in d or d["infoblock_uuid"] != tag
            else:
                assert d["namespace"].startswith("namespace")
                # The tag is the namespace's UUID, not the dax info block's.
                assert d["infoblock_uuid"] != tag

            # The bytes went to the device, and so to the host's backing file, at
            # the device's offset inside its NVDIMM region.
            region_base = regions[f"region{d['region']}"]
            off = vmkit.find_pattern(images[k], seeds[k])
            assert off == start - region_base, \
                f"tag {k}: pattern at {off} in {images[k]}, expected {start - region_base}"
            with open(images[k], "rb") as fh:
                fh.seek(off + S1_LEN - MiB)
                assert fh.read(MiB) == vmkit.daxmap_pattern(seeds[k], MiB, (S1_LEN - MiB) // 8)

        for line in (f"daxmap write: path=/run/tagmem/{S1_TAG_A}/data",
                     f"daxmap verify: path={dev['A']}",
                     f"daxmap write: path={dev['B']}",
                     f"daxmap verify: path=/run/tagmem/{S1_TAG_B}/data",
                     f"daxmap write: path=/run/tagmem/{S1_TAG_C}/data",
                     f"daxmap verify: path={dev['C']}"):
            assert re.search(rf"^{re.escape(line)} .* OK$", res.console, re.M), line
        assert "TM-EVENT: data path checked" in res.console

    _verify(check, res)


# --------------------------------------------------------------------------
# 2. two hosts sharing one allocation
# --------------------------------------------------------------------------


def test_two_hosts_share_one_allocation(vm_assets, product, guest_tools, vm_timings, tmp_path):
    hosts = tagmemvm.TwoHosts.in_cache(vm_assets.cache_dir, "s2")
    t0 = time.monotonic()
    if hosts.prepare(vm_assets) is not None:
        vm_timings["s2 prepare image"] = f"{time.monotonic() - t0:.1f}s"
    initrd = tagmemvm.build_initrd(tmp_path / "s2.cpio",
                                   tagmemvm.TwoHosts.scenario(PINGPONG_ROUNDS),
                                   assets=vm_assets, product=product, tools=guest_tools)
    t0 = time.monotonic()
    guests = tagmemvm.start_all(hosts.guest_configs(initrd, assets=vm_assets,
                                                    timeout_s=GUEST_TIMEOUT_S + 60,
                                                    log_dir=tmp_path))
    a, b = tagmemvm.wait_all(guests)
    vm_timings["s2 two hosts wall"] = f"{time.monotonic() - t0:.1f}s"
    _record(vm_timings, "s2 host A", a)
    _record(vm_timings, "s2 host B", b)

    def check() -> None:
        tag = tagmemvm.TWO_HOST_SHARED
        metas = {}
        for res in (a, b):
            assert section(res, "ls-mount"), res.tail()
            metas[res.name] = section_json(res, f"metadata-{tag}")
            shown = section_json(res, f"show-{tag}")  # as root: with the ranges
            assert metas[res.name] == tagmemvm.without_ranges(shown)
            assert all(d["ranges"] for d in shown["devices"]), "root sees the ranges"
            assert section(res, f"resolve-{tag}").strip() == section(res, f"dev-{tag}").strip()
        # Same allocation, same tag, different device names.
        dev_a, dev_b = (metas[h]["path"] for h in ("host-A", "host-B"))
        assert dev_a == "/dev/dax0.1" and dev_b == "/dev/dax1.1", (dev_a, dev_b)
        for key in ("tag", "size", "align", "name", "shareable", "state", "source"):
            assert metas["host-A"][key] == metas["host-B"][key], key
        assert metas["host-A"]["name"] == tagmemvm.TWO_HOST_NAME
        assert metas["host-A"]["shareable"] is True
        assert [section(r, f"shareable-{tag}").strip() for r in (a, b)] == ["1", "1"]
        # ... and the very same namespace: its info block's UUID is on the shared media.
        ib = [metas[h]["devices"][0]["infoblock_uuid"] for h in ("host-A", "host-B")]
        assert ib[0] == ib[1], ib

        ping, pong = tagmemvm.parse_pingpong(a), tagmemvm.parse_pingpong(b)
        assert (ping.role, pong.role) == ("ping", "pong")
        n = PINGPONG_ROUNDS
        assert ping.messages == [f"pong #{k} <- ping #{k}" for k in range(1, n + 1)]
        assert pong.messages == [f"ping #{k}" for k in range(1, n + 1)]
        r = ping.rtt_us
        vm_timings[f"s2 pingpong {n} round trips"] = (
            f"{ping.seconds:.2f}s, rtt median {r['median']:.0f}us p99 {r['p99']:.0f}us "
            f"(handshake after {ping.connected_after_s:.1f}s)")

    _verify(check, a, b)


# --------------------------------------------------------------------------
# 3. access
# --------------------------------------------------------------------------


def test_access_is_granted_per_tag(vm_assets, product, guest_tools, vm_timings, tmp_path):
    nv = vmkit.NvdimmSpec(_image(vm_assets, "s3.img"), "1G")
    vmkit.prepare_nvdimm(nv, S3_TAGS, "256M", assets=vm_assets)
    ta, tb = S3_TAGS
    seed = _seed()
    u = USER_UID

    def conf(keys: dict[str, str] | None) -> str:
        text = tagmemvm.conf_text({ta: keys} if keys else {}, "scenario 3")
        return tagmemvm.heredoc("$TM_CONF", text) + "tm_reload\n"

    scenario = f"""
DA=$(vmkit_dax_for_tag {ta})
DATA_A=$TM_MNT/{ta}/data
DATA_B=$TM_MNT/{tb}/data
as_user() {{ tagmem-runas {u} {u} "$@"; }}
# daxmap OP PATH as uid {u} must fail with EACCES
deny() {{ # write|verify PATH
    if as_user daxmap $1 $2 {seed:#x} 2M >/tmp/deny.out 2>&1; then
        cat /tmp/deny.out; echo "uid {u} could $1 $2"; return 1
    fi
    cat /tmp/deny.out
    grep -q "Permission denied" /tmp/deny.out
    echo "TM-DENIED $1 $2"
}}
tm_start
tm_section stat-initial stat -L -c '%u:%g:%a' $DATA_A $DATA_B
# uid {u} may look, not map
as_user ls -l $TM_MNT/{ta} >/dev/null
as_user cat $TM_MNT/{ta}/metadata >/dev/null
deny verify $DATA_A
deny verify $DATA_B
deny verify $DA
echo "TM-EVENT: phase 1 (no grant) done"

{conf({"owner": str(u)})}
tm_wait_stat '%u:%g:%a' $DATA_A "{u}:0:600"
tm_section stat-owner stat -L -c '%u:%g:%a' $DATA_A $DATA_B
as_user daxmap write $DATA_A {seed:#x} 8M
daxmap verify $DA {seed:#x} 8M
as_user daxmap verify $DATA_A {seed:#x} 8M
deny verify $DATA_B
deny verify $DA
echo "TM-EVENT: phase 2 (owner grant) done"

{conf({"group": str(u), "mode": "0640"})}
tm_wait_stat '%u:%g:%a' $DATA_A "0:{u}:640"
tm_section stat-group stat -L -c '%u:%g:%a' $DATA_A $DATA_B
as_user daxmap verify $DATA_A {seed:#x} 8M
deny write $DATA_A
deny verify $DATA_B
echo "TM-EVENT: phase 3 (group read-only grant) done"

{conf(None)}
tm_wait_stat '%u:%g:%a' $DATA_A "0:0:600"
deny verify $DATA_A
echo "TM-EVENT: phase 4 (revoked) done"
tm_stop
"""
    initrd = tagmemvm.build_initrd(tmp_path / "s3.cpio", scenario, assets=vm_assets,
                                   product=product, tools=guest_tools)
    res = vmkit.boot(initrd, [nv], timeout_s=GUEST_TIMEOUT_S, name="s3",
                     log_path=tmp_path / "s3.log", assets=vm_assets)
    _record(vm_timings, "s3 access", res)

    def check() -> None:
        def stats(name):
            return section(res, name).split()

        assert stats("stat-initial") == ["0:0:600", "0:0:600"], res.tail()
        for phase in ("phase 1 (no grant)", "phase 2 (owner grant)",
                      "phase 3 (group read-only grant)", "phase 4 (revoked)"):
            assert f"TM-EVENT: {phase} done" in res.console, f"{phase} failed\n{res.tail(60)}"
        assert stats("stat-owner") == [f"{u}:0:600", "0:0:600"]
        assert stats("stat-group") == [f"0:{u}:640", "0:0:600"]
        assert res.console.count("TM-DENIED") == 8

    _verify(check, res)


# --------------------------------------------------------------------------
# 4. daemon death
# --------------------------------------------------------------------------


def test_mapping_survives_daemon_death(vm_assets, product, guest_tools, vm_timings, tmp_path):
    nv = vmkit.NvdimmSpec(_image(vm_assets, "s4.img"), "1G")
    vmkit.prepare_nvdimm(nv, S4_TAGS, "256M", assets=vm_assets)
    ta, tb = S4_TAGS
    seed = _seed()
    hold_s = GUEST_TIMEOUT_S  # a ceiling: the scenario stops the holder (SIGTERM) when done
    scenario = f"""
DB=$(vmkit_dax_for_tag {tb})
tm_start
: >/tmp/hold.out
daxmap hold $TM_MNT/{ta}/data {hold_s} 4M >/tmp/hold.out 2>&1 &
HOLD=$!
i=0
until grep -q "daxmap hold: mapped" /tmp/hold.out; do
    i=$((i + 1)); [ $i -lt 200 ] || {{ cat /tmp/hold.out; exit 1; }}; sleep 0.05
done
OLD=$TM_PID
kill -9 $OLD
rc=0; wait $OLD || rc=$?
echo "TM-EVENT: tagmemfs killed rc=$rc uptime=$(tm_now)"
TM_PID=
# The mount is stale now: what needs the daemon fails with ENOTCONN (what
# the kernel has cached - listings, the data link - may still be served).
tm_section stale-stat stat -c '%F %a' $TM_MNT || true
tm_section stale-statfs stat -f -c '%T' $TM_MNT || true
tm_section stale-ls ls $TM_MNT/12345678-0000-4000-8000-00000000dead || true
tm_section stale-open daxmap verify $TM_MNT/{tb}/data 0 2M || true
kill -0 $HOLD
sleep 1
kill -0 $HOLD
echo "TM-EVENT: holder alive after the kill"
if tm_start; then
    echo "TM-EVENT: tagmemfs restarted"
    tm_section ls-after ls -1 $TM_MNT
    daxmap write $TM_MNT/{tb}/data {seed:#x} 4M
    daxmap verify $DB {seed:#x} 4M
    echo "TM-EVENT: restarted tagmemfs serves"
else
    echo "TM-EVENT: restart failed"
fi
kill -0 $HOLD
echo "TM-EVENT: holder alive after the restart attempt"
kill -TERM $HOLD
rc=0; wait $HOLD || rc=$?
cat /tmp/hold.out
echo "TM-EVENT: holder exited rc=$rc"
[ $rc -eq 0 ]
[ -z "$TM_PID" ] || tm_stop
"""
    initrd = tagmemvm.build_initrd(tmp_path / "s4.cpio", scenario, assets=vm_assets,
                                   product=product, tools=guest_tools)
    res = vmkit.boot(initrd, [nv], timeout_s=GUEST_TIMEOUT_S, name="s4",
                     log_path=tmp_path / "s4.log", assets=vm_assets)
    _record(vm_timings, "s4 daemon death", res)

    def check() -> None:
        ev = tagmemvm.events(res)
        assert any(e.startswith("tagmemfs killed rc=137") for e in ev), f"{ev}\n{res.tail()}"
        # The program holding the mapping never noticed.
        assert "holder alive after the kill" in ev, res.tail()
        hold = re.search(r"daxmap hold: OK path=\S+ iterations=(\d+) seconds=([\d.]+)", res.console)
        assert hold and "holder exited rc=0" in ev, res.tail()
        vm_timings["s4 holder"] = f"{hold.group(1)} rewrite+verify passes in {hold.group(2)}s"
        # The dead mount: the kernel answers stat(2) of its root from its attribute
        # cache; everything that needs the daemon fails with ENOTCONN.
        def outcome(name: str) -> str:
            return (section(res, name).strip() or tagmemvm.section_stderr(res, name)).strip()

        vm_timings["s4 dead mount: stat, statfs"] = \
            f"{outcome('stale-stat')!r}, {outcome('stale-statfs')!r}"
        vm_timings["s4 dead mount: open of a data looked up before"] = outcome("stale-open")
        # A name the kernel never saw needs the daemon: ENOTCONN. (Opening a
        # data link looked up before may still work: the link is cached and
        # the node lives on the daemon's tmpfs until a restart replaces it.)
        for name in ("stale-statfs", "stale-ls"):
            assert outcome(name).endswith("Transport endpoint is not connected"), \
                (name, outcome(name))
        # A restarted tagmemfs must detach the stale mount and serve again.
        if "tagmemfs restarted" not in ev:
            errors = re.findall(r"^tagmemfs\[\d+\]: error: .*$", res.console, re.M)
            pytest.fail(f"tagmemfs did not start over the stale mount: {errors}\n"
                        f"On the dead mount, stat(2) of its root gave {outcome('stale-stat')!r} "
                        f"(the kernel's attribute cache answers it), statfs(2) gave "
                        f"{outcome('stale-statfs')!r}.")
        assert re.search(r"stale mount .*ENOTCONN", res.console), \
            "restart did not report the stale mount"
        # ... and only once its first scan is done: detached earlier, the path
        # is an empty directory for as long as the scan takes (clients see no
        # tags and no error; under load, a second).
        pid = re.findall(r"^TM-EVENT: tagmemfs mounted pid=(\d+)", res.console, re.M)[-1]
        steps = [m.group(1) for m in re.finditer(
            rf"^tagmemfs\[{pid}\]: \w+: (?:\S+: )?(stale mount|rescan \(start\)|mounted)",
            section(res, "tagmemfs-log"), re.M)]
        assert steps == ["stale mount", "rescan (start)", "stale mount", "mounted"], steps
        assert section(res, "ls-after").split() == sorted(S4_TAGS)
        assert "restarted tagmemfs serves" in ev, res.tail()

    _verify(check, res)
