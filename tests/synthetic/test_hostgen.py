# SPDX-License-Identifier: Apache-2.0
"""Checks that synthetic hosts are read by the real libdaxctl as intended.

`daxctl list` (ndctl v76) is the referee: if it sees a scenario's devices the
way the scenario's docstring says, the tree follows the kernel layout closely
enough for the production code too. Needs root (mount namespaces) and a
kernel with the dax char major; anything else is skipped loudly.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import hostgen as hg  # noqa: E402


def _host_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "NOT ROOT: synthetic hosts need mount namespaces; run the tests as root"
    try:
        hg.dax_major()
    except hg.NoDaxMajor as e:
        return f"NO DAX MAJOR: {e}"
    return None


SKIP_REASON = _host_skip_reason()
if SKIP_REASON:  # a warning shows in pytest's summary even without -rs
    warnings.warn(f"synthetic host tests skipped: {SKIP_REASON}", pytest.PytestWarning)
needs_host = pytest.mark.skipif(SKIP_REASON is not None, reason=f"*** SKIPPED: {SKIP_REASON} ***")


def build(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    hg.scenario(name).write(root)
    return root


def daxctl_list(root: Path, idle: bool = False) -> tuple[dict, dict, str]:
    """(devices by name, regions by path, stderr) of `daxctl list -R -D [-i]`."""
    argv = ["daxctl", "list", "-R", "-D"] + (["-i"] if idle else [])
    res = hg.run_in_host(root, argv)
    assert res.returncode == 0, res.stderr
    regions = json.loads(res.stdout) if res.stdout.strip() else []
    devices = {d["chardev"]: d for r in regions for d in r.get("devices", [])}
    return devices, {r["path"]: r for r in regions}, res.stderr


def in_host_python(root: Path, code: str) -> str:
    res = hg.run_in_host(root, [sys.executable, "-c", code])
    assert res.returncode == 0, res.stderr
    return res.stdout


# -- builder model (no root needed) ---------------------------------------

def test_tag_claims_every_extent_in_order_and_zero_claims_one_untagged():
    h = hg.Host()
    r = h.dcd_region(0, base=1 << 36, size=8 * hg.GiB)
    a1 = r.extent(length=hg.GiB, uuid=hg.TAG_A)
    u1 = r.extent(length=hg.GiB)
    a2 = r.extent(length=hg.GiB, uuid=hg.TAG_A)
    u2 = r.extent(length=hg.GiB)
    tagged = r.dax(0, uuid=hg.TAG_A)
    untagged = r.dax(1, uuid="0")
    seed = r.dax(2, size=0)
    assert tagged.mappings == [(a1.start, hg.GiB), (a2.start, hg.GiB)]
    assert tagged.size == 2 * hg.GiB and tagged.resource == a1.start
    assert untagged.mappings == [(u1.start, hg.GiB)]
    assert seed.mappings == [] and seed.resource == r.base
    assert r.available_size == u2.length and r.seed == "dax0.2"
    assert [d.minor for d in (tagged, untagged, seed)] == [0, 1, 2]


def test_duplicate_device_names_are_refused():
    h = hg.Host()
    h.hmem(0, base=1 << 36, size=hg.GiB)
    with pytest.raises(ValueError, match="duplicate"):
        h.dcd_region(0, base=1 << 37, size=hg.GiB).dax(0, size=hg.GiB)


def test_links_are_relative_like_the_kernel_makes_them():
    assert hg._relative("bus/dax/devices/dax0.0", "devices/platform/hmem.0/dax0.0") \
        == "../../../devices/platform/hmem.0/dax0.0"
    assert hg._relative("devices/system/node/node1/access0/initiators/node0",
                        "devices/system/node/node0") == "../../../node0"


def test_nvdimm_dax_device_is_named_after_the_namespace():
    nv = hg.nvdimm().devices
    assert sorted(nv) == ["dax1.0", "dax1.1"]
    assert nv["dax1.1"].sysfs_dir.endswith("ndbus0/region1/dax1.1/dax1.1")


# -- scenarios as daxctl sees them ----------------------------------------

@needs_host
def test_empty(tmp_path):
    root = build(tmp_path, "empty")
    assert daxctl_list(root)[0] == {}
    assert (root / "sys/bus/dax/devices").is_dir() and (root / "sys/bus/dax/drivers").is_dir()


@needs_host
def test_dcd(tmp_path):
    root = build(tmp_path, "dcd")
    devices, regions, _ = daxctl_list(root)
    assert sorted(devices) == ["dax0.0", "dax0.1", "dax0.2"]  # the size-0 seed is idle
    assert devices["dax0.0"]["size"] == hg.GiB + 512 * hg.MiB
    assert devices["dax0.1"]["size"] == devices["dax0.2"]["size"] == 256 * hg.MiB
    assert {d["mode"] for d in devices.values()} == {"devdax"}
    assert {d["target_node"] for d in devices.values()} == {1}
    (region,) = regions.values()
    assert region["path"] == "/platform/ACPI0017:00/root0/decoder0.0/region0/dax_region0"
    assert region["available_size"] == hg.GiB  # the TAG_C extent

    idle, _, _ = daxctl_list(root, idle=True)
    assert idle["dax0.3"]["size"] == 0 and idle["dax0.3"]["state"] == "disabled"

    sys_dir = root / "sys"
    dax = sys_dir / "bus/dax/devices"
    assert (dax / "dax0.0/uuid").read_text() == hg.TAG_A + "\n"
    assert (dax / "dax0.2/uuid").read_text() == hg.ZERO_UUID + "\n"
    assert (dax / "dax0.0/mapping1/page_offset").read_text() == f"{hg.GiB // 4096:#x}\n"
    extents = sorted((dax / "dax0.0").resolve().parent.glob("extent0.*"))
    tags = [(e / "uuid").read_text().strip() if (e / "uuid").exists() else None
            for e in extents]
    assert tags == [hg.TAG_A, hg.TAG_B, hg.TAG_A, None, hg.TAG_C]
    perf = sys_dir / "devices/system/node/node1/access0/initiators"
    assert int((perf / "read_latency").read_text()) == hg.CXL_NODE_PERF["read_latency"]
    assert (perf / "node0").resolve() == sys_dir / "devices/system/node/node0"


@needs_host
def test_nvdimm(tmp_path):
    root = build(tmp_path, "nvdimm")
    devices, regions, _ = daxctl_list(root)
    assert sorted(devices) == ["dax1.0", "dax1.1"]
    assert {d["size"] for d in devices.values()} == {4 * hg.GiB - hg.NVDIMM_DATA_OFFSET}
    assert sorted(p.rsplit("/", 1)[1] for p in regions) == ["dax1.0", "dax1.1"]
    nd_region = root / "sys" / hg._ND_BUS / "region1"
    assert (nd_region / "namespace1.1/uuid").read_text() == hg.TAG_NV1 + "\n"
    assert (nd_region / "dax1.1/uuid").read_text() == hg.INFOBLOCK_NV1 + "\n"
    assert (nd_region / "dax1.1/namespace").read_text() == "namespace1.1\n"
    # The dax device itself has a uuid of its own on a DCD (v11) kernel: the
    # null UUID, and no tag; the earlier layout has none.
    assert (nd_region / "dax1.1/dax1.1/uuid").read_text() == hg.ZERO_UUID + "\n"


@needs_host
def test_nvdimm_early_layout_has_no_device_uuid(tmp_path):
    h = hg.Host("early")
    r = h.nvdimm_region(region_id=1, base=0x20_0000_0000, size=16 * hg.GiB)
    r.namespace(0, hg.TAG_NV0)
    root = h.write(tmp_path / "early")
    nd_region = root / "sys" / hg._ND_BUS / "region1"
    assert (nd_region / "namespace1.0/uuid").read_text() == hg.TAG_NV0 + "\n"
    assert not (nd_region / "dax1.0/dax1.0/uuid").exists()


@needs_host
def test_config_only(tmp_path):
    root = build(tmp_path, "config-only")
    devices, regions, _ = daxctl_list(root)
    assert {n: (d["size"], d["target_node"]) for n, d in devices.items()} == {
        "dax2.0": (8 * hg.GiB, 2), "dax3.0": (4 * hg.GiB, 3)}
    assert sorted(regions) == ["/platform/hmem.2", "/platform/hmem.3"]
    resource = root / "sys/bus/dax/devices/dax2.0/resource"
    assert resource.read_text() == "0x3000000000\n"


@needs_host
def test_mixed(tmp_path):
    devices, _, _ = daxctl_list(build(tmp_path, "mixed"))
    assert sorted(devices) == ["dax0.0", "dax0.1", "dax0.2", "dax1.0", "dax1.1", "dax2.0"]


@needs_host
def test_conflict(tmp_path):
    root = build(tmp_path, "conflict")
    devices, _, _ = daxctl_list(root)
    assert sorted(devices) == ["dax0.0", "dax1.0"]
    sys_dir = root / "sys"
    assert (sys_dir / "bus/dax/devices/dax0.0/uuid").read_text().strip() == hg.TAG_CONFLICT
    assert (sys_dir / "bus/nd/devices/namespace1.0/uuid").read_text().strip() == hg.TAG_CONFLICT


@needs_host
def test_system_ram(tmp_path):
    root = build(tmp_path, "system-ram")
    devices, _, _ = daxctl_list(root)
    dev = devices["dax0.0"]
    assert dev["mode"] == "system-ram"
    assert dev["online_memblocks"] == dev["total_memblocks"] == hg.GiB // hg.MEMORY_BLOCK_SIZE
    assert dev["movable"] is True


@needs_host
def test_malformed(tmp_path):
    root = build(tmp_path, "malformed")
    devices, _, stderr = daxctl_list(root)
    # libdaxctl drops a device without a /dev node (stat fails) and one whose
    # bus link dangles; daxctl hides size 0 unless -i. The rest it lists.
    assert sorted(devices) == ["dax0.0", "dax0.1", "dax0.3", "dax0.4", "dax0.5", "dax0.8"]
    assert "dax0.2: add_dev() failed" in stderr
    idle, _, _ = daxctl_list(root, idle=True)
    assert idle["dax0.7"]["size"] == 0

    dax = root / "sys/bus/dax/devices"
    assert (dax / "dax0.0/uuid").read_text() == hg.BAD_UUID_TEXT + "\n"
    assert (dax / "dax0.1/uuid").read_text() == hg.TRUNCATED_UUID_TEXT + "\n"
    assert (dax / "dax0.6").is_symlink() and not (dax / "dax0.6").exists()
    assert (dax / "dax0.7/size").read_bytes() == b""
    assert (dax / "dax0.8/uuid").read_text() == hg.TAG_GOOD + "\n"

    major, minor = hg.dax_major(), {n: d.minor for n, d in hg.malformed().devices.items()}
    nodes = json.loads(in_host_python(root, """
import json, os, stat
out = {}
for n in ["dax0.2", "dax0.3", "dax0.4", "dax0.5", "dax0.6", "dax0.8"]:
    try:
        st = os.lstat("/dev/" + n)
    except FileNotFoundError:
        out[n] = None
        continue
    out[n] = ["b" if stat.S_ISBLK(st.st_mode) else "c", os.major(st.st_rdev), os.minor(st.st_rdev)]
print(json.dumps(out))
"""))
    assert nodes["dax0.2"] is None
    assert nodes["dax0.3"] == ["b", major, minor["dax0.3"]]
    assert nodes["dax0.4"] == ["c", 1, 3]
    assert (dax / "dax0.5/dev").read_text() == f"{major}:{minor['dax0.5']}\n"
    assert nodes["dax0.5"][:2] == ["c", major] and nodes["dax0.5"][2] != minor["dax0.5"]
    assert nodes["dax0.6"] == ["c", major, minor["dax0.6"]]
    assert nodes["dax0.8"] == ["c", major, minor["dax0.8"]]


# -- the environment inside a host ----------------------------------------

@needs_host
def test_dax_node_opens_with_enxio_and_basics_work(tmp_path):
    root = build(tmp_path, "dcd")
    out = in_host_python(root, """
import errno, os, stat
try:
    os.open("/dev/dax0.0", os.O_RDWR)
except OSError as e:
    print(errno.errorcode[e.errno])
try:
    open("/sys/bus/dax/devices/dax0.0/uuid", "w")
except OSError as e:
    print(errno.errorcode[e.errno])
with open("/dev/null", "w") as f:
    f.write("x")
st = os.stat("/dev/fuse")
print(stat.S_ISCHR(st.st_mode), os.major(st.st_rdev), os.minor(st.st_rdev))
print(os.path.realpath("/sys/bus/dax/devices/dax0.0"))
print(sorted(os.listdir("/sys/bus/dax/devices")))
""")
    lines = out.splitlines()
    assert lines[0] == "ENXIO"
    assert lines[1] == "EROFS"
    assert lines[2] == "True 10 229"
    assert lines[3] == "/sys/" + hg.dcd().devices["dax0.0"].sysfs_dir
    assert lines[4] == "['dax0.0', 'dax0.1', 'dax0.2', 'dax0.3']"


@needs_host
def test_exit_status_and_output_pass_through(tmp_path):
    res = hg.run_in_host(build(tmp_path, "empty"), ["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (res.returncode, res.stdout, res.stderr) == (7, "out\n", "err\n")


@needs_host
def test_long_running_command_gets_signals(tmp_path):
    root = build(tmp_path, "dcd")
    proc = subprocess.Popen(hg.host_argv(root, ["sh", "-c", "echo ready; exec sleep 60"]),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.terminate()
        assert proc.wait(timeout=10) == -15
    finally:
        proc.kill()
        proc.wait()


@needs_host
def test_cli_build_and_run(tmp_path):
    script = str(Path(hg.__file__))
    subprocess.run([sys.executable, script, "build", "nvdimm", str(tmp_path / "h")], check=True)
    res = subprocess.run([sys.executable, script, "run", str(tmp_path / "h"), "--",
                          "daxctl", "list"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert sorted(d["chardev"] for d in json.loads(res.stdout)) == ["dax1.0", "dax1.1"]


@needs_host
def test_root_under_dev_shm_survives_the_dev_overmount():
    shm_root = Path(tempfile.mkdtemp(prefix="hostgen-test-", dir="/dev/shm"))
    try:
        hg.dcd().write(shm_root)
        assert sorted(daxctl_list(shm_root)[0]) == ["dax0.0", "dax0.1", "dax0.2"]
    finally:
        shutil.rmtree(shm_root)


# -- escape hatches --------------------------------------------------------

@needs_host
def test_set_attr_replaces_one_file_not_its_hard_link_siblings(tmp_path):
    root = build(tmp_path, "dcd")
    dax = root / "sys/bus/dax/devices"
    assert os.stat(dax / "dax0.0/align").st_ino == os.stat(dax / "dax0.1/align").st_ino
    hg.set_attr(root, hg.dcd().devices["dax0.0"].path("align"), "4096\n")
    assert (dax / "dax0.0/align").read_text() == "4096\n"
    assert (dax / "dax0.1/align").read_text() == f"{hg.DEFAULT_ALIGN}\n"


@needs_host
def test_overrides_and_dev_nodes(tmp_path):
    h = hg.dcd()
    dev = h.devices["dax0.1"]
    h.override(dev.path("driver"),
               hg.Symlink(hg._relative(dev.path("driver"), "bus/dax/drivers/kmem")))
    h.override(dev.path("numa_node"), None)
    h.dev_node("dax0.2", kind="symlink", target="null")
    h.dev_node("dax9.9", kind="c", minor=h.unused_minor())
    root = h.write(tmp_path / "h")
    top = root / "sys" / dev.sysfs_dir
    assert (top / "driver").resolve() == root / "sys/bus/dax/drivers/kmem"
    assert not (top / "numa_node").exists()
    manifest = (root / "dev.list").read_text().splitlines()
    assert "l dax0.2 null" in manifest
    assert f"c dax9.9 {hg.dax_major()} 4" in manifest
    devices, _, _ = daxctl_list(root)
    assert devices["dax0.1"]["mode"] == "system-ram"


@needs_host
def test_block_node_on_a_real_block_major_is_refused(tmp_path):
    real = min(hg._proc_devices("Block").values())
    h = hg.dcd()
    h.dev_node("dax0.0", kind="b", major=real, minor=0)
    with pytest.raises(ValueError, match="real driver"):
        h.write(tmp_path / "h")


# -- scale ------------------------------------------------------------------

@needs_host
def test_many_at_scale():
    """HOSTGEN_SCALE_N (default 100000) tagged devices; all visible to daxctl."""
    n = int(os.environ.get("HOSTGEN_SCALE_N", "100000"))
    host = hg.many(n)
    with hg.scratch_tmpfs() as scratch:
        started = time.monotonic()
        root = host.write(scratch / "h")
        print(f"many({n}) written in {time.monotonic() - started:.1f} s")
        res = hg.run_in_host(root, ["sh", "-c", "daxctl list | grep -c chardev"], timeout=600)
        assert res.returncode == 0, res.stderr
        assert int(res.stdout) == n
        last = n - 1
        name = f"dax{last // hg.SCALE_DEVICES_PER_REGION}.{last % hg.SCALE_DEVICES_PER_REGION}"
        uuid = root / "sys/bus/dax/devices" / name / "uuid"
        assert uuid.read_text() == hg.scale_tag(last) + "\n"
