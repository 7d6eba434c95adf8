# SPDX-License-Identifier: Apache-2.0
"""A host tag attached to a running guest and detached again, as CXL
Dynamic Capacity (issue 18, docs/vm.md "Hand-off as CXL dynamic capacity").

Why: `tagmem vm-args --cxl` gives a guest an empty DC region per tag, and
`tagmem vm-attach`/`vm-detach` add and release the tag's capacity over QMP
while the guest runs. Only a guest with the DCD kernel under the
tag-carrying QEMU (dcdkit: TAGMEM_DCD_KERNEL, TAGMEM_DCD_QEMU; skipped
without them, failed under CI=true) shows that the unchanged guest tagmemfs
makes the region itself (the hand-off item asks), claims the capacity when
it arrives, and shows /run/tagmem/T with the host's size, name, shareable
flag and bytes; and what a detach meets while the guest holds the tag.

The host side is the real `tagmem` run on a synthetic host (hostgen in a
private mount namespace, as for test_vm_handoff) that has the tag and a
second one not given to the guest; the one test switch: the tag's
mem-path names a plain file instead of /run/tagmem/<tag>/data.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dcdkit
import tagmemvm
import vmkit
from tagmemvm import section, section_json

MiB = vmkit.MiB
T = "c1c1c1c1-0018-4000-8000-0000000000c1"
T_UNDECLARED = "c2c2c2c2-0018-4000-8000-0000000000c2"  # on the host, not given at boot
T_UNKNOWN = "c3c3c3c3-0018-4000-8000-0000000000c3"  # on no host
T2 = "c5c5c5c5-0018-4000-8000-0000000000c5"  # a second tag given to the same guest
SIZE = 256 * MiB  # the guest's CXL decoders map 256 MiB blocks
SIZE2 = 512 * MiB
HOST2_SEED = 0x5eed2518  # T2's pattern, at HOST_OFF of its own data
NAME = "vm-cxl-db"
PERF = tagmemvm.HANDOFF_PERF
HOST_SEED, HOST_OFF = 0x5eed18, 0x100008  # the host's pattern, read by the guest
GUEST_SEED, GUEST_OFF = 0x9e5718, 0x2200010  # the guest's, read back on the host
PATTERN_LEN = 64 * 1024
GUEST_TIMEOUT_S = 300

EXIT = {"unknown": 3, "qmp": 17, "not_declared": 18, "refused": 19, "not_attached": 20}


@pytest.fixture(scope="module")
def dcd():
    paths = dcdkit.locate()
    try:
        vmkit.ensure_host_tools()
    except vmkit.QemuUnavailable as exc:
        pytest.skip(f"CXL hand-off tests: {exc}")
    assets = dcdkit.assets(paths)
    try:
        product = tagmemvm.product_binaries(tagmemvm.build_dir(), assets.cache_dir)
    except tagmemvm.ProductMissing as exc:
        pytest.fail(str(exc))
    return paths, assets, product


def start_guest(dcd, qemu_args: list[str], backing: Path, initrd: Path, workdir: Path,
                name: str, env: dict[str, str] | None = None, smp: int = 2):
    """One DCD guest on `tagmem vm-args --cxl`'s QEMU arguments (the tag's
    mem-path already swapped for ``backing``), with its own QMP socket and
    answer port: workdir/<name>-qmp.sock, <name>-ctl.sock, <name>.log."""
    paths, assets, _ = dcd
    files = dcdkit.DcdGuestFiles(backing, workdir / f"{name}-qmp.sock",
                                 workdir / f"{name}-ctl.sock")
    machine = [*qemu_args, "-qmp", f"unix:{files.qmp},server=on,wait=off",
               "-chardev", f"socket,id=ctl,path={files.ctl},server=on,wait=off",
               "-serial", "chardev:ctl"]
    argv = vmkit.qemu_argv(initrd, assets=assets, smp=smp,
                           env={"DCD_CLAIM": "daemon", **(env or {})}, machine_args=machine)
    argv = [str(paths.qemu), *[a for d in dcdkit.FIRMWARE_DIRS for a in ("-L", d)], *argv[1:]]
    return vmkit.Guest(argv, name, GUEST_TIMEOUT_S, workdir / f"{name}.log"), files


class SyntheticHost:
    """The host: T and T_UNDECLARED as 256 MiB hmem devices on node 1 (with
    HMAT figures), named and made shareable by its tagmem.conf."""

    def __init__(self, workdir: Path):
        sys.path.insert(0, str(tagmemvm.REPO / "tests" / "synthetic"))
        import hostgen
        self.hg = hostgen
        h = hostgen.Host()
        h.node(1, read_latency=PERF["read_latency_ns"], write_latency=PERF["write_latency_ns"],
               read_bandwidth=PERF["read_bandwidth_mbps"],
               write_bandwidth=PERF["write_bandwidth_mbps"])
        sections = {}
        base = 0x1040000000
        for i, (tag, size) in enumerate(((T, SIZE), (T_UNDECLARED, SIZE), (T2, SIZE2))):
            h.hmem(region_id=i, base=base, size=size, target_node=1)
            sections[tag] = {"name": NAME if tag == T else f"other{i}", "shareable": "yes",
                             "match-range": f"{base:#x}-{base + size - 1:#x}"}
            base += size
        self.root = workdir / "cxl-host"
        h.write(self.root)
        self.conf = workdir / "cxl-host.conf"
        self.conf.write_text(tagmemvm.conf_text(sections, "the host's tags"))
        self.tagmem = str(tagmemvm.build_dir() / "cli" / "tagmem")

    def run(self, *args: str) -> subprocess.CompletedProcess:
        r = self.hg.run_in_host(self.root, [self.tagmem, "--config", str(self.conf), *args])
        print(f"host: tagmem {' '.join(args)} -> {r.returncode}\n{r.stdout}{r.stderr}")
        return r


def scenario() -> str:
    d = f"$TM_MNT/{T}/data"
    return f"""
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
dcd_start_answers
tm_start
echo "TM-EVENT: tagmemfs mounted uptime=$(tm_now)"
tm_section dc-log grep -i 'dynamic_ram_1\\|DC region' "$TM_LOG"
tm_section dc-regions sh -c 'ls -d /sys/bus/cxl/devices/region*/dax_region* 2>&1'
tm_section list-before tagmem list
dcd_ask attach
tagmem wait {T} --timeout 120
echo "TM-EVENT: tag ready uptime=$(tm_now)"
tagmem wait {T2} --timeout 120
tm_show {T} {T2}
# Two tags in one guest: each data is its own host file at the same offset;
# T2 detached (after unclaim) leaves T.
tm_section verify-t2 daxmap verify $TM_MNT/{T2}/data {HOST2_SEED} {PATTERN_LEN} {HOST_OFF}
tm_section unclaim-t2 tagmem unclaim {T2}
dcd_ask detach-t2
for i in $(seq 600); do [ -e "$TM_MNT/{T2}" ] || break; sleep 0.1; done
[ -e "$TM_MNT/{T2}" ] && echo "TM-EVENT: t2 still there" || echo "TM-EVENT: t2 gone uptime=$(tm_now)"
tm_section ls-after-t2 ls "$TM_MNT"
tm_section region-access sh -c 'for d in /sys/bus/cxl/devices/region*/access*; do echo "$d: $(ls $d)"; done'
tm_section guest-cdat sh -c 'sha256sum /sys/bus/cxl/devices/endpoint*/CDAT'
tm_section verify daxmap verify {d} {HOST_SEED} {PATTERN_LEN} {HOST_OFF}
tm_section write daxmap write {d} {GUEST_SEED} {PATTERN_LEN} {GUEST_OFF}
daxmap hold {d} 600 4096 >/tmp/hold.out 2>&1 &
HOLD=$!
sleep 1
dcd_ask detach-while-mapped
tm_section release-requested tagmem wait --release-requested {T} --timeout 5 || true
tm_section meta-refused cat "$TM_MNT/{T}/metadata"
tm_section unclaim-mapped tagmem unclaim {T} || true
kill -TERM $HOLD; wait $HOLD; cat /tmp/hold.out
tm_section unclaim tagmem unclaim {T}
dcd_ask detach
for i in $(seq 600); do [ -e "$TM_MNT/{T}" ] || break; sleep 0.1; done
[ -e "$TM_MNT/{T}" ] && echo "TM-EVENT: tag still there" || echo "TM-EVENT: tag gone uptime=$(tm_now)"
dcd_ask after
tm_section list-after tagmem list
tm_stop
"""


def test_vm_attach_detach(dcd, guest_tools, tmp_path):
    _, assets, product = dcd
    host = SyntheticHost(tmp_path)

    t0 = time.monotonic()
    gen = host.run("vm-args", "--cxl", "--format", "json", "--memory", "1G",
                   "--cdat-dir", str(tmp_path), T, T2)
    assert gen.returncode == 0, gen.stderr
    vm_args_s = time.monotonic() - t0
    generated = json.loads(gen.stdout)
    item = generated["fw_cfg"]["content"]
    assert item["tags"] == [] and item["cxl"]["make_dc_regions"] is True
    assert item["cxl"]["tags"][0]["host"]["performance"] == PERF
    cdat = tmp_path / f"{T}.cdat"
    assert f",cdat={cdat}" in " ".join(generated["qemu"])
    assert cdat.stat().st_size == 16 + 24 * 6  # DSMAS, four DSLBIS, DSEMTS

    backing = dcdkit.backing_file(tmp_path / "tag-data.img", SIZE)
    dcdkit.write_at(backing, HOST_OFF, vmkit.daxmap_pattern(HOST_SEED, PATTERN_LEN))
    qemu_args = tagmemvm.with_backing_file(generated["qemu"], T, backing)
    backing2 = dcdkit.backing_file(tmp_path / "tag2-data.img", SIZE2)
    dcdkit.write_at(backing2, HOST_OFF, vmkit.daxmap_pattern(HOST2_SEED, PATTERN_LEN))
    qemu_args = tagmemvm.with_backing_file(qemu_args, T2, backing2)

    initrd = dcdkit.build_initrd(tmp_path / "initrd.gz", scenario(), assets=assets,
                                 product=product, tools=guest_tools)
    guest, files = start_guest(dcd, qemu_args, backing, initrd, tmp_path, "vm-cxl")

    sock = str(files.qmp)
    got: dict[str, subprocess.CompletedProcess] = {}
    times: dict[str, float] = {}

    def attach(_q):
        def run():
            got["unknown"] = host.run("vm-attach", "--qmp", sock, T_UNKNOWN)
            got["no_qmp"] = host.run("vm-attach", "--qmp", str(tmp_path / "none.sock"), T)
            got["undeclared"] = host.run("vm-attach", "--qmp", sock, T_UNDECLARED)
            got["detach_unattached"] = host.run("vm-detach", "--qmp", sock, "--wait", "0", T)
            t = time.monotonic()
            got["attach"] = host.run("vm-attach", "--qmp", sock, T)
            times["attach_cmd"] = time.monotonic() - t
            t = time.monotonic()
            got["attach_t2"] = host.run("vm-attach", "--qmp", sock, T2)
            times["attach_t2"] = time.monotonic() - t
        return run

    def detach_t2(_q):
        def run():
            t = time.monotonic()
            got["detach_t2"] = host.run("vm-detach", "--qmp", sock, "--wait", "20", T2)
            times["detach_t2"] = time.monotonic() - t
        return run

    def detach(key, wait):
        def make(_q):
            def run():
                t = time.monotonic()
                got[key] = host.run("vm-detach", "--qmp", sock, "--wait", str(wait), T)
                times[key] = time.monotonic() - t
            return run
        return make

    def after(_q):
        def run():
            got["detach_again"] = host.run("vm-detach", "--qmp", sock, "--wait", "0", T)
        return run

    try:
        dcdkit.serve(guest, files, {"attach": attach,
                                    "detach-while-mapped": detach("detach_mapped", 3),
                                    "detach": detach("detach", 20), "after": after,
                                    "detach-t2": detach_t2},
                     GUEST_TIMEOUT_S)
    finally:
        res = guest.wait()
    print(res.console[-20000:])
    if res.oops:
        pytest.fail(f"guest kernel oopsed: {res.oops_summary}")

    assert "attach" in got, "the guest never asked for the tag (see its console above)"
    # Refusals, each with its own exit code.
    assert got["unknown"].returncode == EXIT["unknown"], got["unknown"].stderr
    assert got["no_qmp"].returncode == EXIT["qmp"], got["no_qmp"].stderr
    assert got["undeclared"].returncode == EXIT["not_declared"], got["undeclared"].stderr
    assert "given at boot" in got["undeclared"].stderr
    assert got["detach_unattached"].returncode == EXIT["not_attached"]
    assert got["attach"].returncode == 0, got["attach"].stderr
    assert got["attach_t2"].returncode == 0, got["attach_t2"].stderr

    # The guest made the DC region itself (no dcd_make_region here).
    assert "dax_region" in section(res, "dc-regions"), section(res, "dc-regions")
    # The tag as the host has it.
    meta = section_json(res, f"metadata-{T}")
    assert meta["tag"] == T and meta["state"] == "ready"
    assert meta["size"] == SIZE and meta["name"] == NAME and meta["shareable"] is True
    assert meta["source"] == "dcd"
    dev = meta["devices"][0]
    print("guest device metadata:", json.dumps(dev, indent=1))
    # The host's figures: in the device's CDAT and in the item. The guest
    # kernel computes no access coordinates for a DC region (region
    # access0/1 are empty) but shows the raw table it read over DOE, the
    # host's byte for byte; the guest's tagmem takes its figures from there.
    print("guest region access:", section(res, "region-access"))
    import hashlib
    assert hashlib.sha256(cdat.read_bytes()).hexdigest() in section(res, "guest-cdat")
    assert dev["performance"] == PERF
    assert set(dev["performance_source"].values()) == {"guest kernel (CDAT)"}
    assert dev["handoff"]["cxl_device"] == f"tagmem-{T}"
    assert "OK" in section(res, "verify"), section(res, "verify")
    with open(backing, "rb") as fh:
        fh.seek(GUEST_OFF)
        assert fh.read(PATTERN_LEN) == vmkit.daxmap_pattern(GUEST_SEED, PATTERN_LEN)
    # The second tag: its own size and bytes at the same offset; its detach
    # left T in the mount (T was read and written after it).
    meta2 = section_json(res, f"metadata-{T2}")
    assert (meta2["state"], meta2["size"], meta2["source"]) == ("ready", SIZE2, "dcd"), meta2
    assert meta2["devices"][0]["handoff"]["cxl_device"] == f"tagmem-{T2}"
    assert "OK" in section(res, "verify-t2"), section(res, "verify-t2")
    assert got["detach_t2"].returncode == 0, got["detach_t2"].stderr
    assert "TM-EVENT: t2 gone" in res.console
    assert T in section(res, "ls-after-t2") and T2 not in section(res, "ls-after-t2")

    # Detach while the guest holds the tag: refused (19), and unclaim in the
    # guest refuses too while mapped; after unclaim the detach goes through.
    assert got["detach_mapped"].returncode == EXIT["refused"], got["detach_mapped"].stderr
    assert "refused" in got["detach_mapped"].stderr
    # The guest's tagmem saw the host ask (the kernel's trace of the refused
    # release, docs/dcd.md): in its metadata and for tagmem wait.
    assert "release_requested" in section_json(res, "meta-refused")
    assert '"event":"release-requested"' in section(res, "release-requested")
    assert "in use by PID" in tagmemvm.section_stderr(res, "unclaim-mapped")
    assert got["detach"].returncode == 0, got["detach"].stderr
    assert "TM-EVENT: tag gone" in res.console
    assert got["detach_again"].returncode == EXIT["not_attached"]

    up = {m.group(1): float(m.group(2)) for m in
          re.finditer(r"^(?:TM-EVENT|DCD-EVENT|DCD-ASK): (.*?) uptime=([\d.]+)", res.console, re.M)}
    attached = up["tag ready"] - up["host did 'attach'"]
    gone = up["tag gone"] - up["host did 'detach'"]
    gone2 = up["t2 gone"] - up["host did 'detach-t2'"]
    print(f"MEASURED vm-args --cxl {vm_args_s:.2f} s; vm-attach command "
          f"{times['attach_cmd']:.2f} s; host answered 'attach' -> tag ready in the guest "
          f"{attached:.2f} s; guest tagmemfs mounted at {up['tagmemfs mounted']:.1f} s uptime; "
          f"detach refused after {times['detach_mapped']:.1f} s; detach after unclaim "
          f"{times['detach']:.2f} s; tag gone {gone:.2f} s after; second tag: vm-attach "
          f"{times['attach_t2']:.2f} s, vm-detach {times['detach_t2']:.2f} s, gone "
          f"{gone2:.2f} s after")


# --------------------------------------------------------------------------
# one host tag in two running guests: a message through it, both detach
# --------------------------------------------------------------------------

ROUNDS = 50


def two_guests_scenario() -> str:
    """Each guest: ask for the tag, exchange messages with the other guest
    through its data (daxmap pingpong: TM_ROLE ping or pong), give it back."""
    return f"""
dcd_start_answers
tm_start
dcd_ask attach
tagmem wait {T} --timeout 120
echo "TM-EVENT: tag ready uptime=$(tm_now)"
tm_show {T}
daxmap pingpong $TM_MNT/{T}/data "$TM_ROLE" {ROUNDS} 120
tm_section unclaim tagmem unclaim {T}
dcd_ask detach
for i in $(seq 600); do [ -e "$TM_MNT/{T}" ] || break; sleep 0.1; done
[ -e "$TM_MNT/{T}" ] && echo "TM-EVENT: tag still there" || echo "TM-EVENT: tag gone uptime=$(tm_now)"
tm_stop
"""


def test_two_guests_share_an_attached_tag(dcd, guest_tools, tmp_path):
    """Two guests started with the same `vm-args --cxl` arguments (one
    backing file, share=on) each get the tag by vm-attach while running,
    ping-pong through /run/tagmem/T/data, and are detached."""
    import threading
    _, assets, product = dcd
    host = SyntheticHost(tmp_path)
    gen = host.run("vm-args", "--cxl", "--format", "json", "--memory", "1G", T)
    assert gen.returncode == 0, gen.stderr
    backing = dcdkit.backing_file(tmp_path / "tag-data.img", SIZE)
    qemu_args = tagmemvm.with_backing_file(json.loads(gen.stdout)["qemu"], T, backing)
    initrd = dcdkit.build_initrd(tmp_path / "initrd.gz", two_guests_scenario(), assets=assets,
                                 product=product, tools=guest_tools)
    guests, times, got, errors, threads = [], {}, {}, [], []
    for name, role in (("guest-a", "ping"), ("guest-b", "pong")):
        g, files = start_guest(dcd, qemu_args, backing, initrd, tmp_path, name,
                               env={"TM_ROLE": role}, smp=1)
        guests.append(g)

        def cmd(verb, name=name, sock=str(files.qmp)):
            def make(_q):
                def run():
                    t = time.monotonic()
                    extra = ("--wait", "20") if verb == "vm-detach" else ()
                    got[name, verb] = host.run(verb, "--qmp", sock, *extra, T)
                    times[name, verb] = time.monotonic() - t
                return run
            return make

        def serve(g=g, files=files, cmd=cmd):
            try:
                dcdkit.serve(g, files, {"attach": cmd("vm-attach"), "detach": cmd("vm-detach")},
                             GUEST_TIMEOUT_S)
            except Exception as exc:  # reported once both guests ended
                errors.append(exc)
                g.kill()
        threads.append(threading.Thread(target=serve, daemon=True))
        threads[-1].start()
    results = tagmemvm.wait_all(guests)
    for t in threads:
        t.join(10)
    for res in results:
        print(res.console[-6000:])
    if errors:
        raise errors[0]
    lines = []
    for res, (name, role) in zip(results, (("guest-a", "ping"), ("guest-b", "pong"))):
        assert res.oops is None, res.oops_summary
        assert got[name, "vm-attach"].returncode == 0, got[name, "vm-attach"].stderr
        meta = section_json(res, f"metadata-{T}")
        assert (meta["state"], meta["size"], meta["name"], meta["source"]) == (
            "ready", SIZE, NAME, "dcd"), meta
        pp = tagmemvm.parse_pingpong(res)
        assert pp.role == role and pp.rounds == ROUNDS, pp
        want = ([f"pong #{k} <- ping #{k}" for k in range(1, ROUNDS + 1)] if role == "ping"
                else [f"ping #{k}" for k in range(1, ROUNDS + 1)])
        assert pp.messages == want
        assert got[name, "vm-detach"].returncode == 0, got[name, "vm-detach"].stderr
        assert "TM-EVENT: tag gone" in res.console, res.tail()
        up = {m.group(1): float(m.group(2)) for m in re.finditer(
            r"^(?:TM-EVENT|DCD-EVENT): (.*?) uptime=([\d.]+)", res.console, re.M)}
        attached = up["tag ready"] - up["host did 'attach'"]
        gone = up["tag gone"] - up["host did 'detach'"]
        lines.append(f"{name}: vm-attach command {times[name, 'vm-attach']:.2f} s, host answered "
                     f"-> tag ready in the guest {attached:.2f} s; "
                     f"{ROUNDS} round trips {pp.seconds:.2f} s (rtt median "
                     f"{pp.rtt_us.get('median', float('nan')):.0f} us); vm-detach "
                     f"{times[name, 'vm-detach']:.2f} s, tag gone "
                     f"{gone:.2f} s after")
    print("MEASURED two guests on one tag:\n  " + "\n  ".join(lines))
