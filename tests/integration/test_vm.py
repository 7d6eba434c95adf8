# SPDX-License-Identifier: Apache-2.0
"""tagmem vm-args on synthetic hosts: the QEMU arguments, guest kernel
parameters and libvirt XML that hand tags to a guest (docs/vm.md), asked of a
running tagmemfs and of a scan, and the refusals with their exit codes."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import xml.etree.ElementTree as ET

import hostgen as hg
import pytest
from conftest import TAGMEM, run_as, run_tagmem, write_config

GiB = hg.GiB
MiB = 1 << 20
FW_PREFIX = "name=opt/org.tagmem/tags,string="
TAG_CFG = "c0f10000-0000-4000-8000-0000000000c1"
TAG_ODD = "c0f10000-0000-4000-8000-0000000000c2"


def qemu_unescape(s: str) -> str:
    assert "," not in s.replace(",,", ""), f"lone comma in {s!r}"
    return s.replace(",,", ",")


def fw_cfg_item(args: list[str]) -> dict:
    i = args.index("-fw_cfg")
    assert args[i + 1].startswith(FW_PREFIX)
    return json.loads(qemu_unescape(args[i + 1][len(FW_PREFIX):]))


def vm_args(*args, **kw):
    return run_tagmem("vm-args", *args, **kw)


def test_daemon_answer_gives_the_contract_layout(make_host, tagmemfs):
    make_host("mixed")
    mnt = tagmemfs().mount_point
    r = vm_args("-m", mnt, "--format", "json", "--memory", "512M", hg.TAG_B, hg.TAG_NV1)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    lay = out["layout"]
    assert (lay["ram_size"], lay["ram_below_4g"]) == (512 * MiB, 512 * MiB)
    nv1_size = int((mnt / hg.TAG_NV1 / "size").read_text())
    assert [(t["tag"], t["guest_node"], t["guest_start"], t["size"], t["object_id"])
            for t in lay["tags"]] == [
        (hg.TAG_B, 1, 4 * GiB, 256 * MiB, "tagmem1"),
        (hg.TAG_NV1, 2, 4 * GiB + 256 * MiB, nv1_size, "tagmem2")]
    assert lay["total"] == 512 * MiB + 256 * MiB + nv1_size
    # The paths QEMU opens are the mount's data files, which resolve.
    for t in lay["tags"]:
        assert t["mem_path"] == f"{mnt}/{t['tag']}/data"
        assert os.path.exists(t["mem_path"])
    args = out["qemu"]
    assert args[args.index("-m") + 1] == f"{lay['total'] // MiB}M"
    assert (f"memory-backend-file,id=tagmem1,size={256 * MiB},"
            f"mem-path={mnt}/{hg.TAG_B}/data,share=on") in args
    assert "node,nodeid=2,memdev=tagmem2" in args
    item = fw_cfg_item(args)
    assert item == out["fw_cfg"]["content"]
    b = item["tags"][0]
    # What the host's metadata says travels: name, shareable, device, perf.
    meta = json.loads((mnt / hg.TAG_B / "metadata").read_text())
    assert (b["tag"], b["size"], b["guest_start"], b["guest_node"]) == (
        hg.TAG_B, 256 * MiB, 4 * GiB, 1)
    assert b["shareable"] == meta["shareable"] and b["name"] == meta["name"]
    assert b["host"] == {"device": "dax0.1", "numa_node": meta["devices"][0]["numa_node"],
                         "source": "dcd", "performance": meta["devices"][0]["performance"]}
    assert b["host"]["performance"]["read_latency_ns"] == hg.CXL_NODE_PERF["read_latency"]
    assert out["kernel_cmdline"] == (
        f"memmap={256 * MiB:#x}%{4 * GiB:#x}-1+0xefffffff "
        f"memmap={nv1_size:#x}%{4 * GiB + 256 * MiB:#x}-1+0xefffffff")
    # --kernel-cmdline alone, for a boot loader entry.
    r = vm_args("-m", mnt, "--memory", "512M", "--kernel-cmdline", hg.TAG_B, hg.TAG_NV1)
    assert (r.returncode, r.stdout) == (0, out["kernel_cmdline"] + "\n")


def test_shell_and_lines_formats_survive_a_real_shell(make_host, tagmemfs, tmp_path):
    make_host("config-only")
    conf = write_config(tmp_path, f"""[tag {TAG_CFG}]
name = db,primary 'x' "y" $(z)
match-node = 2
shareable = yes
""")
    mnt = tagmemfs("-c", conf).mount_point
    lines = vm_args("-m", mnt, "--format", "lines", TAG_CFG)
    assert lines.returncode == 0, lines.stderr
    args = lines.stdout.splitlines()
    shell = vm_args("-m", mnt, TAG_CFG)
    assert shell.returncode == 0 and shell.stdout.count("\n") == 1
    # The shell reads the line back as exactly these arguments.
    echoed = subprocess.run(["sh", "-c", "printf '%s\\n' " + shell.stdout],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    assert echoed == args == shlex.split(shell.stdout)
    assert "memmap=" in shell.stderr  # the kernel parameter is said beside
    item = fw_cfg_item(args)
    assert item["tags"][0]["name"] == "db,primary 'x' \"y\" $(z)"
    assert item["tags"][0]["host"]["device"] == "dax2.0"
    assert item["tags"][0]["size"] == 8 * GiB


def test_several_guests_get_the_same_answer(make_host, tagmemfs):
    make_host("dcd")
    mnt = tagmemfs().mount_point
    first = vm_args("-m", mnt, hg.TAG_A, hg.TAG_B)
    again = vm_args("-m", mnt, hg.TAG_A, hg.TAG_B)
    assert first.returncode == 0 and first.stdout == again.stdout
    # Asked in another order, the ids follow the order asked.
    swapped = vm_args("-m", mnt, "--format", "json", hg.TAG_B, hg.TAG_A)
    tags = json.loads(swapped.stdout)["layout"]["tags"]
    assert [t["tag"] for t in tags] == [hg.TAG_B, hg.TAG_A]


def test_scan_without_daemon_agrees_with_the_daemon(make_host, tagmemfs):
    make_host("dcd")
    scanned = vm_args("--format", "lines", "--memory", "2G", "--machine", "q35", hg.TAG_A)
    assert scanned.returncode == 0, scanned.stderr
    mnt = tagmemfs().mount_point
    asked = vm_args("-m", mnt, "--format", "lines", "--memory", "2G", "--machine", "q35",
                    hg.TAG_A)
    assert asked.stdout == scanned.stdout.replace("/run/tagmem/", f"{mnt}/")
    assert "q35,max-ram-below-4g=2147483648" in asked.stdout.splitlines()


@pytest.mark.parametrize("scenario,tag,code,message", [
    ("dcd", "12345678-0000-4000-8000-000000000000", 3, "no device carries tag"),
    ("conflict", hg.TAG_CONFLICT, 4, "cannot go to a guest"),
    ("system-ram", hg.TAG_RAM, 5, "it is system-ram"),
    ("dcd", hg.TAG_C, 5, "it is offered"),
])
def test_unusable_tags_are_refused_with_their_exit_code(make_host, tagmemfs, scenario, tag,
                                                        code, message):
    make_host(scenario)
    for where in ([], ["-m", str(tagmemfs().mount_point)]):  # scan, then the daemon
        r = vm_args(*where, tag)
        assert (r.returncode, r.stdout) == (code, ""), (where, r.stderr)
        assert message in r.stderr and tag in r.stderr


def test_every_refusal_is_said_and_the_first_decides(make_host):
    make_host("dcd")
    r = vm_args(hg.TAG_A, hg.TAG_C, "12345678-0000-4000-8000-000000000000")
    assert r.returncode == 5 and r.stdout == ""
    assert "it is offered" in r.stderr and "no device carries tag 12345678" in r.stderr


def test_tags_that_do_not_fit_a_guest_exit_7(make_host, tmp_path):
    h = hg.Host()
    h.hmem(region_id=2, base=0x30_0000_0000, size=3 * MiB, target_node=2)
    h.hmem(region_id=3, base=0x40_0000_0000, size=1536 * GiB, target_node=3)
    make_host(h)
    conf = write_config(tmp_path, f"""[tag {TAG_ODD}]
match-node = 2
[tag {TAG_CFG}]
match-node = 3
""")
    r = run_tagmem("vm-args", TAG_ODD, config=conf)
    assert r.returncode == 7 and "not a multiple of 2 MiB" in r.stderr, r.stderr
    r = run_tagmem("vm-args", TAG_CFG, config=conf)
    assert r.returncode == 7 and "beyond 980 GiB" in r.stderr, r.stderr


@pytest.mark.parametrize("args,message", [
    (["--memory", "1X"], "unknown unit"),
    (["--memory", "3M"], "not a positive multiple of 2 MiB"),
    (["--memory", "0"], "not a positive multiple"),
    (["--machine", "virt"], "neither pc"),
    (["--format", "yaml"], "yaml"),
    (["--cpus", "0"], "cpus"),
    (["--user", "no-such-user-here"], "no user"),
    (["not-a-uuid"], "not a UUID"),
    ([hg.TAG_A], "asked for twice"),
    # Three kinds of output: two at once is refused, not one of them guessed.
    (["--libvirt", "--format", "json"], "excludes"),
    (["--format", "lines", "--kernel-cmdline"], "excludes"),
    (["--libvirt", "--kernel-cmdline"], "excludes"),
])
def test_bad_requests_exit_2(make_host, args, message):
    make_host("dcd")
    r = vm_args(hg.TAG_A, *args)
    assert r.returncode == 2 and message in r.stderr and r.stdout == "", r.stderr


def test_hotplug_is_refused_with_exit_8(make_host):
    make_host("dcd")
    r = vm_args("--hotplug", hg.TAG_A)
    assert r.returncode == 8 and "hotplug into a running guest is not possible" in r.stderr
    assert r.stdout == ""


def test_access_the_vmm_lacks_is_warned_not_fatal(make_host, tagmemfs, tmp_path):
    make_host("config-only")
    conf = write_config(tmp_path, f"""[tag {TAG_CFG}]
match-node = 2
owner = nobody
mode = 0600
""")
    mnt = tagmemfs("-c", conf).mount_point
    r = vm_args("-m", mnt, "--user", "nobody", TAG_CFG)
    assert r.returncode == 0 and "may not open" not in r.stderr, r.stderr
    r = vm_args("-m", mnt, "--user", "daemon", TAG_CFG)
    assert r.returncode == 0 and r.stdout
    assert f"daemon may not open {mnt}/{TAG_CFG}/data read-write (access nobody:root 0600)" \
        in r.stderr

    # A caller who is not root, by default the user checked: told by the
    # daemon (which lists every tag), warned about its own access.
    code = (f"import subprocess, sys; r = subprocess.run([{str(TAGMEM)!r}, 'vm-args', '-m', "
            f"{str(mnt)!r}, {TAG_CFG!r}], capture_output=True, text=True); "
            "sys.stdout.write(r.stdout); sys.stderr.write(r.stderr); sys.exit(r.returncode)")
    r = run_as(65533, 65533, code)
    assert r.returncode == 0 and r.stdout, r.stderr
    assert f"uid 65533 may not open {mnt}/{TAG_CFG}/data read-write" in r.stderr


def _full_domain(fragment: str) -> ET.ElementTree:
    """A whole domain: the fragment plus what every domain needs."""
    ET.register_namespace("qemu", "http://libvirt.org/schemas/domain/qemu/1.0")
    dom = ET.fromstring(fragment)
    ET.SubElement(dom, "name").text = "tagmem-guest"
    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(os_el, "kernel").text = "/boot/vmlinuz"
    ET.SubElement(os_el, "cmdline").text = "console=ttyS0"
    ET.SubElement(dom, "devices")
    return ET.ElementTree(dom)


def test_libvirt_fragment_is_a_valid_domain_part(make_host, tagmemfs, tmp_path):
    make_host("dcd")
    mnt = tagmemfs().mount_point
    r = vm_args("-m", mnt, "--libvirt", "--memory", "512M", "--cpus", "2", hg.TAG_A, hg.TAG_B)
    assert r.returncode == 0, r.stderr
    dom = ET.fromstring(r.stdout)  # well-formed
    q = "{http://libvirt.org/schemas/domain/qemu/1.0}"
    args = [a.get("value") for a in dom.find(f"{q}commandline")]
    lines = vm_args("-m", mnt, "--format", "lines", "--memory", "512M", "--cpus", "2",
                    hg.TAG_A, hg.TAG_B).stdout.splitlines()
    # The tags' backends and nodes are exactly those of the QEMU arguments.
    for i, a in enumerate(lines):
        if a.startswith("memory-backend-file") or a.startswith("node,nodeid=1") \
                or a.startswith("node,nodeid=2"):
            assert a in args
    assert args[args.index("-m") + 1] == lines[lines.index("-m") + 1]
    # The fw_cfg item: the plain QEMU argument through the passthrough (libvirt
    # 9.0 mangles a <sysinfo type='fwcfg'> entry; tests/qemu/test_libvirt_handoff.py).
    assert dom.find("sysinfo") is None
    assert args[args.index("-fw_cfg") + 1] == lines[lines.index("-fw_cfg") + 1]
    assert args[args.index("-fw_cfg") + 1].startswith("name=opt/org.tagmem/tags,string=")
    cell = dom.find("cpu/numa/cell")
    assert (cell.get("id"), cell.get("cpus"), cell.get("memory"), cell.get("unit")) == (
        "0", "0-1", str(512 * 1024), "KiB")
    validate = shutil.which("virt-xml-validate")
    if not validate:
        pytest.skip("virt-xml-validate (libvirt-clients) is not installed: "
                    "the fragment was checked well-formed only")
    path = tmp_path / "domain.xml"
    _full_domain(r.stdout).write(path, encoding="unicode")
    v = subprocess.run([validate, str(path), "domain"], capture_output=True, text=True)
    assert v.returncode == 0, (v.stdout, v.stderr, path.read_text())


@pytest.mark.parametrize("machine,memory,ram_spans", [
    ("pc", "512M", [(0, 512 * MiB)]),
    ("pc", "8G", [(0, 3 * GiB), (4 * GiB, 9 * GiB)]),
    ("q35", "3G", [(0, 2 * GiB), (4 * GiB, 5 * GiB)]),
])
def test_qemu_places_every_tag_at_its_guest_start(make_host, tmp_path, machine, memory,
                                                  ram_spans):
    """The layout rule against QEMU itself: QEMU started (-S, no guest) with
    the generated arguments, its memory map read from the monitor. Only the
    tags' mem-path is swapped for sparse files of their size (no devdax here)."""
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        pytest.skip("qemu-system-x86_64 is not installed (TAGMEM_SKIP_QEMU_DEPS?): "
                    "the layout was not checked against QEMU")
    h = make_host("dcd")
    r = vm_args("--format", "json", "--machine", machine, "--memory", memory, "--cpus", "2",
                hg.TAG_B, hg.TAG_A)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    h.unmount()  # QEMU runs on the real /dev and /sys; mounted again for the fixture
    try:
        mon = _qemu_memory_map(qemu, out, tmp_path)
    finally:
        h.mount()
    assert mon.returncode == 0, mon.stderr
    # "0000000100000000-000000010fffffff (prio 0, ram): tagmem1" in the
    # flat view of the system address space (AS "memory").
    views = [v for v in mon.stdout.split("FlatView #") if 'AS "memory"' in v]
    assert len(views) == 1, mon.stdout
    system = views[0]
    spans: dict[str, list[tuple[int, int]]] = {}
    for m in re.finditer(r"^\s*([0-9a-f]+)-([0-9a-f]+) \(prio \d+, ram\): (\S+)", system, re.M):
        spans.setdefault(m[3], []).append((int(m[1], 16), int(m[2], 16) + 1))
    for t in out["layout"]["tags"]:
        assert spans[t["object_id"]] == [(t["guest_start"], t["guest_start"] + t["size"])], \
            system
    # Node 0: all of RAM below the cap (less the legacy hole), the rest at 4 GiB.
    ram = spans["tagmem-ram"]
    assert ram[0][0] == 0 and ram[-1][1] == ram_spans[-1][1], system
    if len(ram_spans) > 1:
        assert (4 * GiB, ram_spans[1][1]) in ram and ram[-2][1] == ram_spans[0][1], system
    assert "node 1 size: 256 MB" in mon.stdout and "node 2 size: 1536 MB" in mon.stdout


def test_largest_layout_is_not_moved_by_qemu(make_host, tmp_path):
    """A tag ending at 980 GiB, the most vm-args lays out, stays at 4 GiB even
    with the CPU (AMD model, phys-bits 42) under which QEMU moves RAM above
    4 GiB to 1 TiB once it nears the HyperTransport hole; 2 MiB more is refused."""
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        pytest.skip("qemu-system-x86_64 is not installed (TAGMEM_SKIP_QEMU_DEPS?)")
    h = hg.Host()
    h.hmem(region_id=2, base=0x100_0000_0000, size=976 * GiB, target_node=2)
    h.hmem(region_id=3, base=0x200_0000_0000, size=976 * GiB + 2 * MiB, target_node=3)
    host = make_host(h)
    conf = write_config(tmp_path, f"""[tag {TAG_CFG}]
match-node = 2
[tag {TAG_ODD}]
match-node = 3
""")
    r = run_tagmem("vm-args", "--memory", "512M", "--machine", "q35", "--format", "json",
                   TAG_CFG, config=conf)
    assert r.returncode == 0, r.stderr
    too_big = run_tagmem("vm-args", "--memory", "512M", "--machine", "q35", TAG_ODD,
                         config=conf)
    assert too_big.returncode == 7 and "beyond 980 GiB" in too_big.stderr
    out = json.loads(r.stdout)
    host.unmount()
    try:
        mon = _qemu_memory_map(qemu, out, tmp_path, ["-cpu", "max,phys-bits=42"])
    finally:
        host.mount()
    assert mon.returncode == 0, mon.stderr
    assert re.search(r"^\s*0000000100000000-000000f4ffffffff \(prio 0, ram\): tagmem1$",
                     mon.stdout, re.M), mon.stdout


def _qemu_memory_map(qemu: str, out: dict, tmp_path, extra=()) -> subprocess.CompletedProcess:
    """QEMU started (-S) with vm-args' arguments, the tags' mem-path swapped
    for sparse files; the monitor's memory map and NUMA nodes."""
    args = out["qemu"]
    for t in out["layout"]["tags"]:
        backing = tmp_path / f"{t['object_id']}.img"
        with open(backing, "wb") as f:
            f.truncate(t["size"])
        old = f"mem-path={t['mem_path']},"
        assert sum(old in a for a in args) == 1
        args = [a.replace(old, f"mem-path={backing},") for a in args]
    return subprocess.run([qemu, "-accel", "tcg", "-nodefaults", "-display", "none", "-S",
                           "-monitor", "stdio", *extra, *args],
                          input="info mtree -f\ninfo numa\nquit\n", capture_output=True,
                          text=True, timeout=120)
