# SPDX-License-Identifier: Apache-2.0
"""Synthetic hosts: fake sysfs trees that the real libdaxctl reads.

DCD tags cannot come from any kernel we can boot (tag-sources.md), so the
discovery code is tested against trees that follow docs/sysfs-layout.md, the
layout of the real kernel. A tree is bind-mounted over /sys in a private mount
namespace and a tmpfs with matching device nodes is mounted over /dev, so the
production code and `daxctl` run unchanged and see only the synthetic devices.

Describe a host with `Host`, write it with `Host.write(root)`, run a command
inside it with `run_in_host(root, argv)`. Named scenarios (`SCENARIOS`,
`scenario(name)`) give the tests, benchmarks and the demo shared fixtures with
fixed tags (the TAG_* constants).
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
PAGE_SIZE = 4 * KiB
DEFAULT_ALIGN = 2 * MiB
MEMORY_BLOCK_SIZE = 128 * MiB  # x86_64 default; kmem onlines this granule
NVDIMM_DATA_OFFSET = 2 * MiB  # info block + reserve in front of a devdax namespace's data
ZERO_UUID = "00000000-0000-0000-0000-000000000000"

# Scenario tags. Readable on purpose: a failing assertion shows which one.
TAG_A = "aaaaaaaa-0000-4000-8000-00000000000a"  # dcd: two extents, dax0.0
TAG_B = "bbbbbbbb-0000-4000-8000-00000000000b"  # dcd: one extent, dax0.1
TAG_C = "cccccccc-0000-4000-8000-00000000000c"  # dcd: offered extent, no device
TAG_NV0 = "d0d0d0d0-0000-4000-8000-0000000000d0"  # nvdimm: namespace uuid of dax1.0
TAG_NV1 = "d1d1d1d1-0000-4000-8000-0000000000d1"  # nvdimm: namespace uuid of dax1.1
INFOBLOCK_NV0 = "e0e0e0e0-0000-4000-8000-0000000000e0"  # nvdimm: info-block uuid of dax1.0
INFOBLOCK_NV1 = "e1e1e1e1-0000-4000-8000-0000000000e1"  # nvdimm: info-block uuid of dax1.1
TAG_CONFLICT = "cf000000-0000-4000-8000-0000000000cf"  # conflict: dax0.0 and dax1.0
TAG_RAM = "7a770000-0000-4000-8000-00000000007a"  # system-ram: dax0.0 (kmem)
TAG_GOOD = "900d0000-0000-4000-8000-000000000900"  # malformed: the one sane device
# malformed: the valid tags behind the broken devices (see malformed()).
TAG_BAD_TEXT = "ba000000-0000-4000-8000-0000000000b0"
TAG_TRUNCATED = "ba000000-0000-4000-8000-0000000000b1"
TAG_NODE_MISSING = "ba000000-0000-4000-8000-0000000000b2"
TAG_BLOCK_NODE = "ba000000-0000-4000-8000-0000000000b3"
TAG_NULL_RDEV = "ba000000-0000-4000-8000-0000000000b4"
TAG_DEV_MISMATCH = "ba000000-0000-4000-8000-0000000000b5"
TAG_DANGLING = "ba000000-0000-4000-8000-0000000000b6"
TAG_EMPTY_SIZE = "ba000000-0000-4000-8000-0000000000b7"
BAD_UUID_TEXT = "not-a-uuid"
TRUNCATED_UUID_TEXT = TAG_TRUNCATED[:18]

# HMAT numbers of a CXL-attached node as seen from node 0 (ns, MB/s).
CXL_NODE_PERF = dict(read_latency=350, write_latency=400, read_bandwidth=24000,
                     write_bandwidth=20000)

_CXL_DECODER = "devices/platform/ACPI0017:00/root0/decoder0.0"
_ND_BUS = "devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0012:00/ndbus0"
_NODES = "devices/system/node"
_MEMORY = "devices/system/memory"
_DRIVERS = {"devdax": "device_dax", "system-ram": "kmem", "disabled": None}
_MINOR_BITS = 20
PARALLEL_MIN_DEVICES = 4096  # below this, forking writers costs more than it saves


class NoDaxMajor(RuntimeError):
    """The running kernel has no `dax` character major: no synthetic host."""


def dax_major() -> int:
    """The `dax` char major of the running kernel, from /proc/devices.

    Nodes use the real major so that opening one reaches device_dax and fails
    with ENXIO, never some other driver.
    """
    major = _proc_devices("Character").get("dax")
    if major is None:
        raise NoDaxMajor("no 'dax' character major in /proc/devices: this kernel lacks "
                         "device-dax (CONFIG_DEV_DAX), so synthetic /dev/daxX.Y nodes "
                         "cannot be made")
    return major


def _proc_devices(section: str) -> dict[str, int]:
    """Name -> major for one section ('Character' or 'Block') of /proc/devices."""
    majors, current = {}, None
    for line in Path("/proc/devices").read_text().splitlines():
        if line.endswith("devices:"):
            current = line.split()[0]
        elif line.strip() and current == section:
            major, name = line.split(None, 1)
            majors.setdefault(name, int(major))
    return majors


@dataclass(frozen=True)
class Symlink:
    """Override content that makes the path a symlink to `target` (as given)."""
    target: str


@dataclass(eq=False)
class Extent:
    """A CXL DC extent: `offset`/`length` in its region, `uuid` None = untagged."""
    region: "DcdRegion" = field(repr=False)
    index: int
    offset: int
    length: int
    uuid: str | None
    claimed_by: "DaxDevice | None" = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"extent{self.region.region_id}.{self.index}"

    @property
    def start(self) -> int:
        return self.region.base + self.offset

    @property
    def sysfs_dir(self) -> str:
        return f"{self.region.dax_dir}/{self.name}"


@dataclass(eq=False)
class DaxDevice:
    """One /dev/daxR.N with its sysfs attributes; paths are relative to /sys."""
    region: "_DaxRegion" = field(repr=False)
    dev_id: int
    size: int
    uuid: str | None
    mode: str
    target_node: int
    numa_node: int
    minor: int
    mappings: list[tuple[int, int]]  # (physical start, length)
    resource: int
    align: int

    @property
    def name(self) -> str:
        return f"dax{self.region.region_id}.{self.dev_id}"

    @property
    def sysfs_dir(self) -> str:
        return f"{self.region.dax_dir}/{self.name}"

    def path(self, attr: str) -> str:
        """Path of one attribute, for `Host.override`."""
        return f"{self.sysfs_dir}/{attr}"


@dataclass(eq=False)
class _DaxRegion:
    """What libdaxctl calls a region: the parent dir holding `dax_region/`."""
    host: "Host" = field(repr=False)
    region_id: int
    base: int
    size: int
    align: int
    target_node: int
    numa_node: int
    devices: list[DaxDevice] = field(default_factory=list, repr=False)
    dynamic = False  # static regions hide available_size/seed/create/delete

    @property
    def dax_dir(self) -> str:
        raise NotImplementedError

    def _add(self, dev_id, size, uuid, mode, target_node, numa_node, minor,
             mappings, resource) -> DaxDevice:
        if mode not in _DRIVERS:
            raise ValueError(f"mode {mode!r}: expected one of {sorted(_DRIVERS)}")
        dev = DaxDevice(
            region=self, dev_id=dev_id, size=size, uuid=uuid, mode=mode,
            target_node=self.target_node if target_node is None else target_node,
            numa_node=self.numa_node if numa_node is None else numa_node,
            minor=self.host.unused_minor() if minor is None else minor,
            mappings=mappings,
            resource=(mappings[0][0] if mappings else self.base) if resource is None else resource,
            align=self.align)
        self.host._register(dev)
        self.devices.append(dev)
        return dev


@dataclass(eq=False)
class DcdRegion(_DaxRegion):
    """A CXL Dynamic Capacity region (out-of-tree v11 ABI): extents + tagged devices."""
    extents: list[Extent] = field(default_factory=list, repr=False)
    # unclaimed extents by uuid (None = untagged), in sequence order
    _offered: dict[str | None, list[Extent]] = field(default_factory=dict, init=False,
                                                      repr=False)
    dynamic = True

    @property
    def sysfs_dir(self) -> str:
        return f"{_CXL_DECODER}/region{self.region_id}"

    @property
    def dax_dir(self) -> str:
        return f"{self.sysfs_dir}/dax_region{self.region_id}"

    def extent(self, offset: int | None = None, length: int = GiB,
               uuid: str | None = None, index: int | None = None) -> Extent:
        """Offer an extent; `offset` defaults to just after the last one.

        `index` names it (extentR.<index>), by default the next number: give
        it to keep names stable across two versions of a host, as the kernel
        keeps an extent's name while it lives.
        """
        if offset is None:
            offset = self.extents[-1].offset + self.extents[-1].length if self.extents else 0
        if offset + length > self.size:
            raise ValueError(f"extent [{offset:#x}, +{length:#x}) exceeds region size "
                             f"{self.size:#x}")
        if index is None:
            index = max((e.index for e in self.extents), default=-1) + 1
        if any(e.index == index for e in self.extents):
            raise ValueError(f"extent{self.region_id}.{index} exists already")
        ext = Extent(self, index, offset, length, uuid)
        self.extents.append(ext)
        self._offered.setdefault(uuid, []).append(ext)
        return ext

    def dax(self, dev_id: int, size: int | None = None, uuid: str | None = ZERO_UUID,
            mode: str = "devdax", target_node: int | None = None,
            numa_node: int | None = None, resource: int | None = None,
            minor: int | None = None) -> DaxDevice:
        """A dax device that claims extents the way a `uuid` write does.

        A tag claims every unclaimed extent carrying it; the all-zero uuid or
        "0" claims one unclaimed untagged extent; None leaves the `uuid` file
        out. Claims need the extents to exist already, as in the kernel.
        `size=0` makes an unclaimed seed; any other explicit `size` only
        overrides the `size` file. Other text in `uuid` is written verbatim.
        """
        claimed = [] if size == 0 else self._claim(uuid)
        dev = self._add(dev_id, sum(e.length for e in claimed) if size is None else size,
                        uuid, mode, target_node, numa_node, minor,
                        [(e.start, e.length) for e in claimed], resource)
        for ext in claimed:
            ext.claimed_by = dev
        return dev

    def _claim(self, uuid: str | None) -> list[Extent]:
        if uuid in (ZERO_UUID, "0"):
            untagged = self._offered.get(None, [])
            return [untagged.pop(0)] if untagged else []
        return self._offered.pop(uuid, []) if uuid is not None else []

    @property
    def seed(self) -> str:
        return next((d.name for d in self.devices if d.size == 0), "")

    @property
    def available_size(self) -> int:
        return sum(e.length for e in self.extents if e.claimed_by is None)


@dataclass(eq=False)
class Namespace:
    """An NVDIMM namespace in devdax mode and the dax device behind it."""
    region: "NvdimmRegion" = field(repr=False)
    ns_id: int
    uuid: str
    size: int
    start: int
    infoblock_uuid: str
    dax: DaxDevice

    @property
    def name(self) -> str:
        return f"namespace{self.region.region_id}.{self.ns_id}"

    @property
    def nd_dax_name(self) -> str:
        return f"dax{self.region.region_id}.{self.ns_id}"


@dataclass(eq=False)
class _NdDaxRegion(_DaxRegion):
    """The dax region of one namespace: it lives in the nd_dax device."""
    nd_dax_name: str = ""
    nd_region_dir: str = ""

    @property
    def dax_dir(self) -> str:
        return f"{self.nd_region_dir}/{self.nd_dax_name}"


@dataclass(eq=False)
class NvdimmRegion:
    """An NVDIMM (pmem) region; each devdax namespace adds a dax region.

    As in the kernel (drivers/dax/pmem.c), the dax device of namespaceK.J is
    named daxK.J and starts NVDIMM_DATA_OFFSET into the namespace.
    """
    host: "Host" = field(repr=False)
    region_id: int
    base: int
    size: int
    target_node: int
    numa_node: int
    namespaces: list[Namespace] = field(default_factory=list)

    @property
    def sysfs_dir(self) -> str:
        return f"{_ND_BUS}/region{self.region_id}"

    def namespace(self, ns_id: int, uuid: str, size: int = 4 * GiB,
                  infoblock_uuid: str = ZERO_UUID, dev_mode: str = "devdax",
                  target_node: int | None = None, align: int = DEFAULT_ALIGN,
                  minor: int | None = None) -> Namespace:
        """Namespace `ns_id` with tag `uuid`, placed after the previous one."""
        start = max((ns.start + ns.size for ns in self.namespaces), default=self.base)
        if start + size > self.base + self.size:
            raise ValueError(f"namespace of {size:#x} bytes does not fit region{self.region_id}")
        data = (start + NVDIMM_DATA_OFFSET, size - NVDIMM_DATA_OFFSET)
        dax_region = _NdDaxRegion(
            host=self.host, region_id=self.region_id, base=data[0], size=data[1],
            align=align, target_node=self.target_node if target_node is None else target_node,
            numa_node=self.numa_node, nd_dax_name=f"dax{self.region_id}.{ns_id}",
            nd_region_dir=self.sysfs_dir)
        dev = dax_region._add(ns_id, data[1], None, dev_mode, None, None, minor, [data], None)
        ns = Namespace(self, ns_id, uuid, size, start, infoblock_uuid, dev)
        self.namespaces.append(ns)
        self.host._regions.append(dax_region)
        return ns


@dataclass(eq=False)
class _HmemRegion(_DaxRegion):
    """Soft-reserved memory (dax_hmem): platform device hmem.K, no uuid anywhere."""

    @property
    def dax_dir(self) -> str:
        return f"devices/platform/hmem.{self.region_id}"


@dataclass(eq=False)
class NodePerf:
    """HMAT access0 numbers of a memory target node as seen from `initiator`."""
    initiator: int = 0
    read_latency: int | None = None
    write_latency: int | None = None
    read_bandwidth: int | None = None
    write_bandwidth: int | None = None


class Host:
    """In-memory description of a synthetic host; `write()` renders it.

    Minors are handed out in creation order. Overrides and /dev node changes
    are applied after rendering, in call order, so they can break anything.
    """

    #: The sysfs layouts tagmem reads (docs/sysfs-layout.md). "v11": the DCD
    #: series as a v11 kernel makes it: every dax device has `uuid` (the null
    #: UUID unless tagged DC capacity backs it), a tagged extent has `uuid`
    #: (an untagged one none), the DAX region of a DC region sits on the cxl
    #: bus. "early": what the series' documentation described before: `uuid`
    #: only on DC devices.
    ABIS = ("v11", "early")

    def __init__(self, abi: str = "v11") -> None:
        if abi not in self.ABIS:
            raise ValueError(f"abi {abi!r}: expected one of {self.ABIS}")
        self.abi = abi
        self.devices: dict[str, DaxDevice] = {}
        self.nodes: dict[int, NodePerf] = {}
        self._regions: list[_DaxRegion] = []
        self._nvdimm_regions: list[NvdimmRegion] = []
        self._overrides: list[tuple[str, bytes | Symlink | None]] = []
        self._dev_nodes: dict[str, tuple] = {}
        self._next_minor = 0

    # -- builder ----------------------------------------------------------
    def node(self, node_id: int, initiator: int = 0, **perf: int) -> NodePerf:
        """NUMA node `node_id` with HMAT perf (read_latency=..., ...)."""
        self.nodes[node_id] = NodePerf(initiator, **perf)
        return self.nodes[node_id]

    def dcd_region(self, region_id: int, base: int, size: int, align: int = DEFAULT_ALIGN,
                   target_node: int = 1, numa_node: int = 0) -> DcdRegion:
        region = DcdRegion(self, region_id, base, size, align, target_node, numa_node)
        self._regions.append(region)
        return region

    def nvdimm_region(self, region_id: int, base: int, size: int, target_node: int = 2,
                      numa_node: int = 0) -> NvdimmRegion:
        region = NvdimmRegion(self, region_id, base, size, target_node, numa_node)
        self._nvdimm_regions.append(region)
        return region

    def hmem(self, region_id: int, base: int, size: int, target_node: int = 2,
             numa_node: int = 0, mode: str = "devdax", minor: int | None = None) -> DaxDevice:
        """An untagged soft-reserved device daxK.0 covering [base, base+size)."""
        region = _HmemRegion(self, region_id, base, size, DEFAULT_ALIGN, target_node, numa_node)
        self._regions.append(region)
        return region._add(0, size, None, mode, None, None, minor, [(base, size)], None)

    def unused_minor(self) -> int:
        """A dax minor no device uses (for nodes that must match nothing)."""
        minor, self._next_minor = self._next_minor, self._next_minor + 1
        if minor >> _MINOR_BITS:
            raise ValueError("out of dax minors")
        return minor

    # -- escape hatches ---------------------------------------------------
    def override(self, path: str, content: bytes | str | Symlink | None) -> None:
        """Replace the file at `path` (relative to /sys) after rendering.

        bytes/str: a regular file with exactly that content; None: remove the
        file, symlink or whole directory; Symlink(t): a symlink to t.
        """
        if isinstance(content, str):
            content = content.encode()
        self._overrides.append((path.strip("/"), content))

    def dev_node(self, name: str, kind: str = "c", major: int | None = None,
                 minor: int | None = None, target: str | None = None) -> None:
        """Replace or add /dev/<name>: kind 'c', 'b', 'symlink' or 'missing'.

        For 'c' and 'b', major defaults to the dax major and minor to the
        device's own minor. Block nodes may not use a registered block major:
        tests must never reach a real disk.
        """
        if kind == "missing":
            self._dev_nodes[name] = ("missing",)
        elif kind == "symlink":
            if not target:
                raise ValueError("a symlink node needs a target")
            self._dev_nodes[name] = ("l", target)
        elif kind in ("c", "b"):
            if minor is None:
                if name not in self.devices:
                    raise ValueError(f"{name}: not a device here, give a minor")
                minor = self.devices[name].minor
            self._dev_nodes[name] = (kind, major, minor)
        else:
            raise ValueError(f"kind {kind!r}: expected c, b, symlink or missing")

    def _register(self, dev: DaxDevice) -> None:
        if dev.name in self.devices:
            raise ValueError(f"duplicate dax device {dev.name}")
        self.devices[dev.name] = dev

    # -- rendering --------------------------------------------------------
    def write(self, root: str | os.PathLike, jobs: int | None = None) -> Path:
        """Write root/sys/... and root/dev.list; `root` must not hold a host yet.

        Identical attribute files are hard links to one inode (a third of
        the space), so change a written tree only with `set_attr()`, never
        by writing a file in place.
        Regions are written by `jobs` forked processes: the time goes into
        file-creating syscalls, about 30 per device. By default hosts with
        at least PARALLEL_MIN_DEVICES devices use every CPU.
        """
        root = Path(root)
        major = dax_major()
        if (root / "sys").exists() or (root / "dev.list").exists():
            raise FileExistsError(f"{root} already holds a synthetic host")
        if jobs is None:
            jobs = (os.cpu_count() or 1) if len(self.devices) >= PARALLEL_MIN_DEVICES else 1
        root.mkdir(parents=True, exist_ok=True)
        w = _TreeWriter(root / "sys")
        self._write_skeleton(w)
        for region in self._nvdimm_regions:
            _write_nvdimm_region(w, region)
        _fork_each(jobs, self._regions, lambda region: _write_dax_region(w, region, major))
        self._write_nodes(w)
        self._write_memory_blocks(w)
        for path, content in self._overrides:
            set_attr(root, path, content)
        self._write_dev_list(root / "dev.list", major)
        return root

    def _node_ids(self) -> list[int]:
        ids = {0, *self.nodes}
        for dev in self.devices.values():
            ids.update(n for n in (dev.target_node, dev.numa_node) if n >= 0)
        return sorted(ids)

    def _write_skeleton(self, w: "_TreeWriter") -> None:
        for d in ("bus/dax/devices", "bus/cxl/devices", "bus/nd/devices", "dev/char",
                  "dev/block", "devices/platform", _NODES, _MEMORY):
            w.dir(d)
        for attr in ("drivers_autoprobe", "drivers_probe", "uevent"):
            w.file(f"bus/dax/{attr}", "1\n" if attr == "drivers_autoprobe" else "")
        for drv in ("device_dax", "kmem"):
            for attr in ("bind", "unbind", "new_id", "remove_id", "uevent"):
                w.file(f"bus/dax/drivers/{drv}/{attr}", "", private=True,
                       mode=0o644 if attr == "uevent" else 0o200)
        w.file(f"{_MEMORY}/block_size_bytes", f"{MEMORY_BLOCK_SIZE:x}\n")
        w.file(f"{_MEMORY}/auto_online_blocks", "offline\n")

    def _write_nodes(self, w: "_TreeWriter") -> None:
        ids = self._node_ids()
        w.file(f"{_NODES}/possible", _cpulist(ids))
        w.file(f"{_NODES}/online", _cpulist(ids))
        for node_id in ids:
            w.dir(f"{_NODES}/node{node_id}")
        for node_id, perf in self.nodes.items():
            base = f"{_NODES}/node{node_id}/access0"
            w.link(f"{base}/initiators/node{perf.initiator}", f"{_NODES}/node{perf.initiator}")
            w.link(f"{_NODES}/node{perf.initiator}/access0/targets/node{node_id}",
                   f"{_NODES}/node{node_id}")
            for attr in ("read_latency", "write_latency", "read_bandwidth", "write_bandwidth"):
                value = getattr(perf, attr)
                if value is not None:
                    w.file(f"{base}/initiators/{attr}", f"{value}\n")

    def _write_memory_blocks(self, w: "_TreeWriter") -> None:
        """kmem's hot-added blocks: what `daxctl list` counts for system-ram."""
        for dev in self.devices.values():
            if dev.mode != "system-ram":
                continue
            for start, length in dev.mappings:
                for index in range(start // MEMORY_BLOCK_SIZE,
                                   (start + length) // MEMORY_BLOCK_SIZE):
                    block = f"{_MEMORY}/memory{index}"
                    w.file(f"{block}/phys_index", f"{index:08x}\n")
                    w.file(f"{block}/state", "online\n")
                    w.file(f"{block}/online", "1\n")
                    w.file(f"{block}/valid_zones", "Movable\n")
                    node = f"{_NODES}/node{dev.target_node}"
                    w.link(f"{block}/node{dev.target_node}", node)
                    w.link(f"{node}/memory{index}", block)

    def _write_dev_list(self, path: Path, major: int) -> None:
        nodes = {name: ("c", major, dev.minor) for name, dev in self.devices.items()}
        for name, spec in self._dev_nodes.items():
            if spec[0] == "missing":
                nodes.pop(name, None)
            elif spec[0] == "l":
                nodes[name] = spec
            else:
                nodes[name] = (spec[0], major if spec[1] is None else spec[1], spec[2])
        busy_block = set(_proc_devices("Block").values())
        lines = []
        for name, spec in nodes.items():
            if spec[0] == "b" and spec[1] in busy_block:
                raise ValueError(f"/dev/{name}: block major {spec[1]} belongs to a real "
                                 "driver; pick an unregistered one")
            lines.append(" ".join(map(str, (spec[0], name, *spec[1:]))) + "\n")
        path.write_text("".join(lines))


def _write_dcd_region(w: "_TreeWriter", region: DcdRegion) -> None:
    top = region.sysfs_dir
    w.file(f"{top}/mode", "dynamic_ram_1\n")
    w.file(f"{top}/size", f"{region.size}\n")
    w.file(f"{top}/resource", f"{region.base:#x}\n")
    w.link(f"bus/cxl/devices/region{region.region_id}", top)
    w.link(f"bus/cxl/devices/dax_region{region.region_id}", region.dax_dir)
    for ext in region.extents:
        w.file(f"{ext.sysfs_dir}/offset", f"{ext.offset:#x}\n")
        w.file(f"{ext.sysfs_dir}/length", f"{ext.length:#x}\n")
        if ext.uuid is not None:  # an untagged extent has no uuid file (seen on v11)
            w.file(f"{ext.sysfs_dir}/uuid", f"{ext.uuid}\n")
    if region.host.abi == "v11":
        w.file(f"{region.dax_dir}/devtype", "cxl_dax_region\n")
        w.link(f"{region.dax_dir}/subsystem", "bus/cxl")


def _write_nvdimm_region(w: "_TreeWriter", region: NvdimmRegion) -> None:
    top = region.sysfs_dir
    for attr, value in (("size", region.size), ("resource", f"{region.base:#x}"),
                        ("numa_node", region.numa_node), ("target_node", region.target_node),
                        ("devtype", "nd_pmem")):
        w.file(f"{top}/{attr}", f"{value}\n")
    # The bad ranges (512-byte sectors in the region): none, as on a healthy
    # pmem region. Tests write "<sector> <count>" lines into it.
    w.file(f"{top}/badblocks", "")
    w.link(f"bus/nd/devices/region{region.region_id}", top)
    for ns in region.namespaces:
        ns_dir, nd_dax_dir = f"{top}/{ns.name}", f"{top}/{ns.nd_dax_name}"
        for attr, value in (("uuid", ns.uuid), ("mode", "dax"), ("size", ns.size),
                            ("resource", f"{ns.start:#x}"), ("numa_node", region.numa_node),
                            ("holder", ns.nd_dax_name), ("devtype", "nd_namespace_pmem")):
            w.file(f"{ns_dir}/{attr}", f"{value}\n")
        for attr, value in (("namespace", ns.name), ("uuid", ns.infoblock_uuid),
                            ("align", ns.dax.align), ("mode", "pmem"),
                            ("size", ns.dax.size), ("resource", f"{ns.dax.resource:#x}"),
                            ("devtype", "nd_dax")):
            w.file(f"{nd_dax_dir}/{attr}", f"{value}\n")
        w.link(f"bus/nd/devices/{ns.name}", ns_dir)
        w.link(f"bus/nd/devices/{ns.nd_dax_name}", nd_dax_dir)


def _write_dax_region(w: "_TreeWriter", region: _DaxRegion, major: int) -> None:
    if isinstance(region, DcdRegion):
        _write_dcd_region(w, region)
    attrs = f"{region.dax_dir}/dax_region"
    w.file(f"{attrs}/id", f"{region.region_id}\n")
    w.file(f"{attrs}/size", f"{region.size}\n")
    w.file(f"{attrs}/align", f"{region.align}\n")
    if region.dynamic:
        w.file(f"{attrs}/available_size", f"{region.available_size}\n")
        w.file(f"{attrs}/seed", f"{region.seed}\n")
        w.file(f"{attrs}/create", "", private=True, mode=0o644)
        w.file(f"{attrs}/delete", "", private=True, mode=0o200)
    for dev in region.devices:
        _write_dax_device(w, dev, major)


def _write_dax_device(w: "_TreeWriter", dev: DaxDevice, major: int) -> None:
    top, devt = dev.sysfs_dir, f"{major}:{dev.minor}"
    driver = _DRIVERS[dev.mode]
    w.file(f"{top}/dev", f"{devt}\n")
    w.file(f"{top}/uevent", f"MAJOR={major}\nMINOR={dev.minor}\nDEVNAME={dev.name}\n"
           + (f"DRIVER={driver}\n" if driver else ""))
    dc = isinstance(dev.region, DcdRegion)
    # A DC device's size is written to give its capacity back (tagmem
    # unclaim): its own inode, the kernel's mode.
    w.file(f"{top}/size", f"{dev.size}\n", private=dc, mode=0o644 if dc else 0o444)
    w.file(f"{top}/align", f"{dev.align}\n")
    w.file(f"{top}/resource", f"{dev.resource:#x}\n")
    w.file(f"{top}/target_node", f"{dev.target_node}\n")
    w.file(f"{top}/numa_node", f"{dev.numa_node}\n")
    uuid = dev.uuid
    if uuid is None and dev.region.host.abi == "v11":
        uuid = ZERO_UUID  # every dax device has one on a DCD kernel
    if uuid is not None:
        # A DC device's is written to claim it (a seed's): its own inode.
        w.file(f"{top}/uuid", f"{uuid}\n", private=dc, mode=0o644 if dc else 0o444)
    pgoff = 0
    for i, (start, length) in enumerate(dev.mappings):
        w.file(f"{top}/mapping{i}/start", f"{start:#x}\n")
        w.file(f"{top}/mapping{i}/end", f"{start + length - 1:#x}\n")
        w.file(f"{top}/mapping{i}/page_offset", f"{pgoff:#x}\n")
        pgoff += length // PAGE_SIZE
    w.link(f"{top}/subsystem", "bus/dax")
    w.link(f"bus/dax/devices/{dev.name}", top)
    w.link(f"dev/char/{devt}", top)
    if driver:
        w.link(f"{top}/driver", f"bus/dax/drivers/{driver}")
        w.link(f"bus/dax/drivers/{driver}/{dev.name}", top)


def _cpulist(ids: list[int]) -> str:
    """Kernel list format: 0-2,5."""
    runs: list[list[int]] = []
    for i in ids:
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs) + "\n"


def _relative(link: str, target: str) -> str:
    """The relative target the kernel writes: up to the common ancestor, then down."""
    src, dst = link.split("/")[:-1], target.split("/")
    common = 0
    while common < min(len(src), len(dst)) and src[common] == dst[common]:
        common += 1
    return "/".join([".."] * (len(src) - common) + dst[common:])


class _TreeWriter:
    """Creates a tree fast, sharing one inode among files of equal content.

    Every small file costs a 4 KiB page or block; a hard link costs none and
    is one syscall instead of three. A 100000 device host takes 2 GB this
    way instead of 6.
    """

    def __init__(self, top: Path) -> None:
        self._top = str(top) + "/"
        self._dirs: set[str] = set()
        self._shared: dict[bytes, str] = {}
        os.mkdir(top)

    def dir(self, rel: str) -> None:
        if rel in self._dirs:
            return
        parent = rel.rpartition("/")[0]
        if parent:
            self.dir(parent)
        with contextlib.suppress(FileExistsError):  # made by a sibling writer process
            os.mkdir(self._top + rel)
        self._dirs.add(rel)

    def file(self, rel: str, text: str, private: bool = False, mode: int = 0o444) -> None:
        """An attribute file; identical ones share an inode unless `private`
        (an attribute a test lets tagmem write: the write must land there
        alone). `mode`: the kernel's for a writable attribute (root owns
        them all; without CAP_DAC_OVERRIDE only the owner's bits count)."""
        self.dir(rel.rpartition("/")[0])
        data, path = text.encode(), self._top + rel
        first = None if private or mode != 0o444 else self._shared.get(data)
        if first is not None:
            try:
                os.link(first, path)
                return
            except OSError as e:
                if e.errno != errno.EMLINK:  # per-inode link limit: start a new copy
                    raise
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        if not private and mode == 0o444:
            self._shared[data] = path

    def link(self, rel: str, target: str) -> None:
        """Symlink `rel` to `target` (both relative to /sys), relative like sysfs."""
        self.dir(rel.rpartition("/")[0])
        os.symlink(_relative(rel, target), self._top + rel)


def _fork_each(jobs: int, tasks: list, run) -> None:
    """run(task) for every task, spread over `jobs` forked processes."""
    if jobs <= 1 or len(tasks) <= 1:
        for task in tasks:
            run(task)
        return
    pids = []
    for k in range(min(jobs, len(tasks))):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for task in tasks[k::jobs]:
                    run(task)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                sys.stderr.flush()
                os._exit(code)
        pids.append(pid)
    failed = sum(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0 for pid in pids)
    if failed:
        raise RuntimeError(f"{failed} writer process(es) failed; traceback above")


@contextlib.contextmanager
def scratch_tmpfs(size: str = "50%"):
    """A fresh tmpfs directory (root only) for big hosts, unmounted on exit.

    Writing a 100000 device host to tmpfs is several times faster than to
    disk and uses no disk; unmounting frees it at once where deleting two
    million entries takes long. The unmount is lazy, so a process that still
    has the host open keeps it until it exits.
    """
    path = Path(tempfile.mkdtemp(prefix="hostgen-"))
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "hostgen",
                        str(path)], check=True)
        try:
            yield path
        finally:
            subprocess.run(["umount", "--lazy", str(path)], check=True)
    finally:
        path.rmdir()


def set_attr(root: str | os.PathLike, path: str, content: bytes | str | Symlink | None) -> None:
    """Change one entry of a written host; `path` is relative to /sys.

    Replaces the entry by rename, never writes in place: files are shared hard
    links, and a reader running inside the host (a daemon under test) must
    see the old or the new content, never a torn one. None removes the entry
    (a directory with everything below it).
    """
    target = Path(root) / "sys" / path.strip("/")
    if content is None:
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.hostgen-tmp")
    if isinstance(content, Symlink):
        os.symlink(content.target, tmp)
    else:
        tmp.write_bytes(content.encode() if isinstance(content, str) else content)
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    os.replace(tmp, target)


# -- running inside a host ------------------------------------------------

_ENTER_SCRIPT = r"""
set -eu
root=$1 python=$2 hostgen=$3
shift 3
mount --bind "$root/sys" /sys
mount -o remount,bind,ro /sys
exec 3< "$root/dev.list"  # before /dev is replaced: root may live under /dev/shm
mount -t tmpfs -o mode=0755,nosuid hostgen-dev /dev
mknod -m 0666 /dev/null c 1 3
mknod -m 0666 /dev/zero c 1 5
mknod -m 0666 /dev/full c 1 7
mknod -m 0666 /dev/random c 1 8
mknod -m 0666 /dev/urandom c 1 9
mknod -m 0666 /dev/tty c 5 0
mknod -m 0666 /dev/fuse c 10 229
mkdir /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777,nosuid,nodev shm /dev/shm
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
"$python" "$hostgen" populate-dev <&3
exec 3<&-
exec "$@"
"""


def host_argv(root: str | os.PathLike, argv: list[str]) -> list[str]:
    """The argv that runs `argv` inside the host at `root`, for Popen.

    unshare execs the shell in place (no --fork), and the shell execs the
    command, so the child pid is the command's and signals reach it. The
    namespace and its mounts vanish with the last process in it.
    """
    root = Path(root).resolve()
    if not (root / "dev.list").is_file() or not (root / "sys").is_dir():
        raise FileNotFoundError(f"{root}: no synthetic host (run Host.write first)")
    if os.geteuid() != 0:
        raise PermissionError("entering a synthetic host needs root (mount namespace)")
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _ENTER_SCRIPT,
            "hostgen-enter", str(root), sys.executable, str(Path(__file__).resolve()), *argv]


def run_in_host(root: str | os.PathLike, argv: list[str], env: dict[str, str] | None = None,
                timeout: float | None = 60) -> subprocess.CompletedProcess:
    """Run `argv` inside the host; its exit status and output (text) pass through."""
    return subprocess.run(host_argv(root, argv), env=env, timeout=timeout,
                          capture_output=True, text=True)


def populate_dev(manifest_lines) -> None:
    """Create the nodes of dev.list in /dev (run inside the namespace).

    Python rather than a shell loop: one mknod process per node would take
    minutes for a 100000 device host.
    """
    for line in manifest_lines:
        kind, name, *rest = line.split()
        path = f"/dev/{name}"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if kind == "l":
            os.symlink(rest[0], path)
        else:
            mode = 0o600 | (stat.S_IFCHR if kind == "c" else stat.S_IFBLK)
            os.mknod(path, mode, os.makedev(int(rest[0]), int(rest[1])))


# -- scenarios ------------------------------------------------------------

def empty() -> Host:
    """No dax devices. Expect: nothing found, `daxctl list` prints nothing."""
    return Host()


def dcd(abi: str = "v11") -> Host:
    """One DC region 0 at 64 GiB, target node 1 (CXL_NODE_PERF), in the
    layout `abi` (Host.ABIS; scenario "dcd-early" is the earlier one).

    Expect: dax0.0 = TAG_A (two extents: 1 GiB + 512 MiB, two mappings),
    dax0.1 = TAG_B (256 MiB), dax0.2 untagged (all-zero uuid, 256 MiB),
    dax0.3 the seed (size 0, disabled, all-zero uuid; `daxctl list` shows it
    only with -i). TAG_C is offered by extent0.4 (1 GiB) but no device holds it.
    """
    h = Host(abi)
    h.node(1, **CXL_NODE_PERF)
    r = h.dcd_region(region_id=0, base=0x10_0000_0000, size=16 * GiB)
    r.extent(offset=0, length=GiB, uuid=TAG_A)
    r.extent(offset=GiB, length=256 * MiB, uuid=TAG_B)
    r.extent(offset=2 * GiB, length=512 * MiB, uuid=TAG_A)
    r.extent(offset=3 * GiB, length=256 * MiB, uuid=None)
    r.extent(offset=4 * GiB, length=GiB, uuid=TAG_C)
    r.dax(dev_id=0, uuid=TAG_A)
    r.dax(dev_id=1, uuid=TAG_B)
    r.dax(dev_id=2, uuid=ZERO_UUID)
    r.dax(dev_id=3, size=0, uuid=ZERO_UUID, mode="disabled")
    return h


def nvdimm() -> Host:
    """NVDIMM region 1 with two devdax namespaces, target node 2.

    Expect: dax1.0 = TAG_NV0 (namespace1.0, info block INFOBLOCK_NV0) and
    dax1.1 = TAG_NV1 (namespace1.1, INFOBLOCK_NV1), each 4 GiB - 2 MiB.
    """
    h = Host()
    nv = h.nvdimm_region(region_id=1, base=0x20_0000_0000, size=16 * GiB)
    nv.namespace(ns_id=0, uuid=TAG_NV0, size=4 * GiB, infoblock_uuid=INFOBLOCK_NV0)
    nv.namespace(ns_id=1, uuid=TAG_NV1, size=4 * GiB, infoblock_uuid=INFOBLOCK_NV1)
    return h


def config_only() -> Host:
    """Two untagged hmem (soft-reserved) devices, nothing tagged.

    Expect: dax2.0 (8 GiB at 0x30_0000_0000, node 2) and dax3.0 (4 GiB at
    0x40_0000_0000, node 3), no tags; only a configuration (match-range /
    match-node) names them.
    """
    h = Host()
    h.hmem(region_id=2, base=0x30_0000_0000, size=8 * GiB, target_node=2)
    h.hmem(region_id=3, base=0x40_0000_0000, size=4 * GiB, target_node=3)
    return h


def mixed() -> Host:
    """dcd() + nvdimm() + an hmem device.

    Expect: hmem dax2.0 (8 GiB at 0x30_0000_0000, node 2); TAG_A, TAG_B,
    TAG_NV0, TAG_NV1 resolved as in those scenarios,
    dax0.2 and dax2.0 untagged, TAG_C offered only.
    """
    h = dcd()
    nv = h.nvdimm_region(region_id=1, base=0x20_0000_0000, size=16 * GiB)
    nv.namespace(ns_id=0, uuid=TAG_NV0, size=4 * GiB, infoblock_uuid=INFOBLOCK_NV0)
    nv.namespace(ns_id=1, uuid=TAG_NV1, size=4 * GiB, infoblock_uuid=INFOBLOCK_NV1)
    h.hmem(region_id=2, base=0x30_0000_0000, size=8 * GiB, target_node=2)
    return h


def conflict() -> Host:
    """One tag on two devices, a DCD one and an NVDIMM one.

    Expect: TAG_CONFLICT on DCD dax0.0 (1 GiB) and on NVDIMM dax1.0
    (namespace1.0, 2 GiB - 2 MiB); the tag is reported as ambiguous.
    """
    h = Host()
    r = h.dcd_region(region_id=0, base=0x10_0000_0000, size=4 * GiB)
    r.extent(length=GiB, uuid=TAG_CONFLICT)
    r.dax(dev_id=0, uuid=TAG_CONFLICT)
    nv = h.nvdimm_region(region_id=1, base=0x20_0000_0000, size=4 * GiB)
    nv.namespace(ns_id=0, uuid=TAG_CONFLICT, size=2 * GiB)
    return h


def system_ram() -> Host:
    """A tagged DCD device given to the page allocator (kmem).

    Expect: TAG_RAM on dax0.0 (1 GiB), mode system-ram, its 8 memory blocks
    online in ZONE_MOVABLE on node 1; found, but not mappable as devdax.
    """
    h = Host()
    h.node(1, **CXL_NODE_PERF)
    r = h.dcd_region(region_id=0, base=0x10_0000_0000, size=4 * GiB)
    r.extent(length=GiB, uuid=TAG_RAM)
    r.dax(dev_id=0, uuid=TAG_RAM, mode="system-ram")
    return h


def malformed() -> Host:
    """One broken device per failure mode, and one good one.

    All in DC region 0, 256 MiB each. dax0.0 uuid reads BAD_UUID_TEXT;
    dax0.1 uuid reads TRUNCATED_UUID_TEXT;
    dax0.2 (TAG_NODE_MISSING) has no /dev node; dax0.3 (TAG_BLOCK_NODE) has a
    block node with its numbers; dax0.4 (TAG_NULL_RDEV) has a char node 1:3;
    dax0.5 (TAG_DEV_MISMATCH) has a node whose minor differs from sysfs
    `dev`; dax0.6 (TAG_DANGLING) is gone from sysfs but still linked from
    /sys/bus/dax/devices and /sys/dev/char (removed mid-scan), its /dev node
    remains; dax0.7 (TAG_EMPTY_SIZE) has an empty `size`.
    Expect: TAG_GOOD resolves to dax0.8 and no broken device stops the scan.
    """
    h = Host()
    r = h.dcd_region(region_id=0, base=0x10_0000_0000, size=4 * GiB)
    tags = [TAG_BAD_TEXT, TAG_TRUNCATED, TAG_NODE_MISSING, TAG_BLOCK_NODE, TAG_NULL_RDEV,
            TAG_DEV_MISMATCH, TAG_DANGLING, TAG_EMPTY_SIZE, TAG_GOOD]
    devs = []
    for dev_id, tag in enumerate(tags):
        r.extent(length=256 * MiB, uuid=tag)
        devs.append(r.dax(dev_id=dev_id, uuid=tag))
    h.override(devs[0].path("uuid"), f"{BAD_UUID_TEXT}\n")
    h.override(devs[1].path("uuid"), f"{TRUNCATED_UUID_TEXT}\n")
    h.dev_node(devs[2].name, kind="missing")
    h.dev_node(devs[3].name, kind="b")
    h.dev_node(devs[4].name, kind="c", major=1, minor=3)
    h.dev_node(devs[5].name, kind="c", minor=h.unused_minor())
    h.override(devs[6].sysfs_dir, None)
    h.override(devs[7].path("size"), b"")
    return h


def scale_tag(i: int) -> str:
    """The tag of device i of many()."""
    return f"5ca1e000-0000-4000-8000-{i:012x}"


SCALE_DEVICES_PER_REGION = 10000
SCALE_DEVICE_SIZE = 256 * MiB


def many(n: int) -> Host:
    """n tagged devices, SCALE_DEVICES_PER_REGION per DC region.

    Expect: device i is dax{i // 10000}.{i % 10000} with tag scale_tag(i)
    and one 256 MiB extent. n=100000 takes about 10 s and 2 GB on a tmpfs
    (scratch_tmpfs) with 2 CPUs; write it to disk only if you must.
    """
    h = Host()
    h.node(1, **CXL_NODE_PERF)
    per_region = SCALE_DEVICES_PER_REGION
    for region_id in range((n + per_region - 1) // per_region):
        count = min(per_region, n - region_id * per_region)
        r = h.dcd_region(region_id=region_id, base=(1 << 44) + region_id * (1 << 42),
                         size=count * SCALE_DEVICE_SIZE)
        for dev_id in range(count):
            tag = scale_tag(region_id * per_region + dev_id)
            r.extent(offset=dev_id * SCALE_DEVICE_SIZE, length=SCALE_DEVICE_SIZE, uuid=tag)
            r.dax(dev_id=dev_id, uuid=tag)
    return h


SCENARIOS = {
    "empty": empty, "dcd": dcd, "dcd-early": lambda: dcd("early"), "nvdimm": nvdimm, "config-only": config_only,
    "mixed": mixed, "conflict": conflict, "system-ram": system_ram, "malformed": malformed,
}


def scenario(name: str) -> Host:
    """A named scenario; `scale-N` is many(N)."""
    if name in SCENARIOS:
        return SCENARIOS[name]()
    match = re.fullmatch(r"scale-(\d+)", name)
    if match:
        return many(int(match.group(1)))
    raise KeyError(f"unknown scenario {name!r}; try: {', '.join(SCENARIOS)}, scale-N")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list scenarios")
    build = sub.add_parser("build", help="write scenario NAME into ROOT")
    build.add_argument("name")
    build.add_argument("root")
    build.add_argument("--jobs", type=int, help="writer processes (default: by size)")
    run = sub.add_parser("run", help="run CMD inside the host at ROOT (as root)")
    run.add_argument("root")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    sub.add_parser("populate-dev", help="(inside a host) mknod the dev.list on stdin")
    args = parser.parse_args(argv)

    if args.cmd == "list":
        for name, fn in SCENARIOS.items():
            print(f"{name:12} {fn.__doc__.splitlines()[0]}")
        print(f"{'scale-N':12} {many.__doc__.splitlines()[0]}")
    elif args.cmd == "build":
        scenario(args.name).write(args.root, jobs=args.jobs)
    elif args.cmd == "run":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            parser.error("run: no command given")
        full = host_argv(args.root, command)
        os.execvp(full[0], full)
    elif args.cmd == "populate-dev":
        populate_dev(sys.stdin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
