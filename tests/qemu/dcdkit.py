# SPDX-License-Identifier: Apache-2.0
"""dcdkit: CXL Dynamic Capacity (DCD) guests for the real-DCD tests (issue 17).

Why this exists: no released kernel has CXL DCD yet, so these guests boot a
kernel built with the DCD patch series under a QEMU whose
``cxl-add-dynamic-capacity`` puts the tag into the extents (docs/dcd.md says
where both come from). Everything else is vmkit and tagmemvm as the NVDIMM
tests use them: the same initramfs builder, Guest class and guest shell
library. What is new here is small:

* :func:`locate` - the DCD kernel and QEMU (``TAGMEM_DCD_KERNEL``,
  ``TAGMEM_DCD_QEMU``), or a skip (a failure under CI) naming what is missing;
* :func:`assets` - vmkit Assets for a kernel that has everything built in:
  a module tree with only modules.builtin, nothing to insmod, so vmkit's
  base initramfs works unchanged;
* :func:`qemu_argv` - one guest with a CXL type-3 device whose one dynamic
  capacity region is a host file (``share=on``), a QMP socket, and a second
  serial port through which the host answers the guest;
* :class:`Qmp` - add and release dynamic capacity (tag + extents), inject
  poison;
* :data:`GUEST_DCD_SH` - the guest side: the administrator's step that makes
  the ``dynamic_ram_1`` region, the hand claim of a tag, and the
  request/answer exchange with the host.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import time
import uuid as uuidlib
from pathlib import Path
from typing import Sequence

import tagmemvm
import vmkit

MiB = vmkit.MiB
GiB = vmkit.GiB

#: Defaults, relative to a "shared" directory next to the repository (where a
#: prepared machine keeps them): for a git worktree, next to its main checkout
#: too.
DEFAULT_KERNEL = Path("dcd/kernel/bzImage")
DEFAULT_QEMU = Path("dcd/qemu/qemu-system-x86_64")
#: The QEMU build needs Debian's firmware directories (SeaBIOS, option ROMs).
FIRMWARE_DIRS = ("/usr/share/seabios", "/usr/share/qemu")
#: The one DCD device's QOM path (its id is cxl-dcd0).
DCD_PATH = "/machine/peripheral/cxl-dcd0"


@dataclasses.dataclass(frozen=True)
class DcdPaths:
    kernel: Path
    qemu: Path


def _shared_dirs() -> list[Path]:
    """<repo>/../shared, and <main checkout>/../shared when the repository is
    a git worktree (its .git is a file naming <main>/.git/worktrees/<name>)."""
    out = [tagmemvm.REPO.parent / "shared"]
    dotgit = tagmemvm.REPO / ".git"
    if dotgit.is_file():
        m = re.match(r"gitdir:\s*(\S+)", dotgit.read_text())
        if m and Path(m.group(1)).parent.name == "worktrees":
            out.append(Path(m.group(1)).parents[2].parent / "shared")
    return out


def _default(rel: Path) -> Path:
    dirs = _shared_dirs()
    return next((d / rel for d in dirs if (d / rel).exists()), dirs[0] / rel)


def find_paths() -> tuple[DcdPaths | None, str]:
    """The DCD kernel and QEMU, or None and a sentence naming what is missing
    and how to provide it."""
    kernel = Path(os.environ.get("TAGMEM_DCD_KERNEL") or _default(DEFAULT_KERNEL))
    qemu = Path(os.environ.get("TAGMEM_DCD_QEMU") or _default(DEFAULT_QEMU))
    missing = []
    if not kernel.is_file():
        missing.append(f"DCD guest kernel {kernel} (set TAGMEM_DCD_KERNEL to a bzImage with "
                       "the CXL DCD series, everything built in)")
    if not (qemu.is_file() and os.access(qemu, os.X_OK)):
        missing.append(f"DCD QEMU {qemu} (set TAGMEM_DCD_QEMU to a qemu-system-x86_64 whose "
                       "cxl-add-dynamic-capacity carries the tag)")
    if missing:
        return None, ("real CXL DCD tests: missing " + "; ".join(missing)
                      + "; docs/dcd.md says where such a kernel and QEMU come from")
    return DcdPaths(kernel, qemu), ""


def locate() -> DcdPaths:
    """find_paths() for tests: a missing file is a pytest.skip naming it, and
    under CI (``CI=true``) a failure: CI is set up with them, and a skip there
    would hide a broken setup."""
    import pytest
    paths, msg = find_paths()
    if paths is None:
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return paths


#: Who claims offered tagged capacity in the scenarios: "daemon" (tagmemfs
#: itself, its default) or "guest" (the scenario, by hand, as an
#: administrator would with a tagmemfs that does not claim).
#: TAGMEM_DCD_CLAIM overrides.
DEFAULT_CLAIM = "daemon"


def claim_mode() -> str:
    mode = os.environ.get("TAGMEM_DCD_CLAIM", DEFAULT_CLAIM)
    if mode not in ("daemon", "guest"):
        raise vmkit.VmError(f"TAGMEM_DCD_CLAIM={mode!r}: want daemon or guest")
    return mode


#: Drivers of the DCD kernel that user space may ask kmod to load; they are
#: built in, and a host says so in /lib/modules/<kver>/modules.builtin.
BUILTIN_MODULES = ("kernel/drivers/dax/device_dax.ko", "kernel/drivers/dax/kmem.ko",
                   "kernel/drivers/dax/dax_cxl.ko", "kernel/drivers/dax/dax_pmem.ko",
                   "kernel/drivers/dax/hmem/dax_hmem.ko")


def kernel_release(bzimage: Path) -> str:
    """``uname -r`` of a bzImage: the x86 boot header's kernel_version string
    (its offset - 0x200 is at 0x20E)."""
    import struct
    with open(bzimage, "rb") as fh:
        head = fh.read(0x10000)
    off = struct.unpack_from("<H", head, 0x20E)[0] + 0x200
    return head[off:off + 256].split(b"\0")[0].split()[0].decode()


def assets(paths: DcdPaths, cache_dir: Path | None = None) -> vmkit.Assets:
    """vmkit Assets for the DCD kernel: it has no modules (everything is built
    in), so /init loads nothing and the module tree holds only what any
    installed kernel has, modules.builtin and depmod's indexes. Why those:
    libdaxctl asks libkmod for device_dax before it binds a device, and
    libkmod only knows a driver is built in from them (without them it
    fails with ENOENT). vmkit's base initramfs (busybox, ndctl, daxctl,
    /init, lib.sh) is then built exactly as for Debian's kernels."""
    cache = Path(cache_dir) if cache_dir else vmkit.default_cache_dir()
    kver = kernel_release(paths.kernel)
    modroot = cache / "dcd" / "modroot"
    mods = modroot / "lib" / "modules" / kver
    builtin = "".join(m + "\n" for m in BUILTIN_MODULES)
    if not (mods / "modules.builtin").is_file() or \
            (mods / "modules.builtin").read_text() != builtin:
        if (modroot / "lib" / "modules").is_dir():
            import shutil
            shutil.rmtree(modroot / "lib" / "modules")
        mods.mkdir(parents=True)
        (mods / "modules.builtin").write_text(builtin)
        (mods / "modules.order").write_text("")
        vmkit._run(["depmod", "-b", modroot, kver])
    return vmkit.Assets(cache_dir=cache, package="dcd-kernel", kver=kver,
                        kernel=paths.kernel, modroot=modroot, modules=[], downloaded=False,
                        timings={}, flavor="dcd")


def qemu_version(paths: DcdPaths) -> str:
    cp = vmkit._run([paths.qemu, "--version"])
    return cp.stdout.splitlines()[0]


@dataclasses.dataclass
class DcdGuestFiles:
    """Host-side files of one guest: the DC region's backing file (may be
    shared with another guest), its QMP socket and its answer socket."""

    backing: Path
    qmp: Path
    ctl: Path


def qemu_argv(paths: DcdPaths, dcd_assets: vmkit.Assets, initrd: Path, files: DcdGuestFiles,
              dc_size: int = GiB, *, mem: str = "1G", smp: int = 2,
              env: dict[str, str] | None = None, extra: Sequence[str] = (),
              nvdimm: vmkit.NvdimmSpec | None = None) -> list[str]:
    """One guest: q35 with CXL, a host bridge, a root port and a type-3 device
    whose one dynamic capacity region is ``files.backing`` (``share=on``: the
    host and a second guest see what this one writes; an extent at region
    offset O is file offset O). ``-serial stdio`` is the console (ttyS0),
    the answer socket is ttyS1. ``nvdimm``: one emulated NVDIMM with a label
    area besides (the DCD kernel has libnvdimm built in), to compare a
    namespace's dax device with the DC ones on the same kernel."""
    backing = str(files.backing).replace(",", ",,")
    nv_args: list[str] = []
    if nvdimm is not None:
        nv_path = str(nvdimm.ensure_file()).replace(",", ",,")
        nv_args = ["-object", f"memory-backend-file,id=nvmem0,share=on,mem-path={nv_path},"
                              f"size={vmkit._parse_size(nvdimm.size)},align=2M",
                   "-device", f"nvdimm,id=nvdimm0,memdev=nvmem0,slot=0,"
                              f"label-size={vmkit._parse_size(nvdimm.label_size)}"]
    machine = [
        "-machine", "q35,cxl=on" + (",nvdimm=on" if nvdimm else ""),
        "-m", f"{mem},maxmem=8G,slots=4", *nv_args,
        "-object", f"memory-backend-file,id=dc0,mem-path={backing},size={dc_size},share=on",
        "-device", "pxb-cxl,bus_nr=12,bus=pcie.0,id=cxl.1,hdm_for_passthrough=true",
        "-device", "cxl-rp,port=0,bus=cxl.1,id=rp0,chassis=0,slot=2",
        "-device", "cxl-type3,bus=rp0,id=cxl-dcd0,volatile-dc-memdev=dc0,num-dc-regions=1,sn=99",
        "-M", "cxl-fmw.0.targets.0=cxl.1,cxl-fmw.0.size=4G,cxl-fmw.0.interleave-granularity=1k",
        "-qmp", f"unix:{files.qmp},server=on,wait=off",
        "-chardev", f"socket,id=ctl,path={files.ctl},server=on,wait=off",
        "-serial", "chardev:ctl",
    ]
    argv = vmkit.qemu_argv(initrd, assets=dcd_assets, smp=smp, env=env, machine_args=machine,
                           extra_args=list(extra))
    firmware = [a for d in FIRMWARE_DIRS for a in ("-L", d)]
    return [str(paths.qemu), *firmware, *argv[1:]]


def backing_file(path: Path, size: int = GiB) -> Path:
    """A fresh sparse backing file (zeros): every run starts clean."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def write_at(path: Path, off: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(off)
        fh.write(data)


# --------------------------------------------------------------------------
# QMP
# --------------------------------------------------------------------------


class QmpError(vmkit.VmError):
    pass


class Qmp:
    """A tiny QMP client: one connection per command (the socket is
    ``server=on,wait=off``, so QEMU takes a new client each time), which keeps
    nothing open while the guest runs."""

    def __init__(self, sock: Path, log: vmkit.Log = vmkit._default_log):
        self.sock, self.log = sock, log

    def execute(self, name: str, args: dict | None = None, timeout_s: float = 30) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                s = socket.socket(socket.AF_UNIX)
                s.settimeout(timeout_s)
                s.connect(str(self.sock))
                break
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with s, s.makefile("rw") as f:
            json.loads(f.readline())  # greeting

            def cmd(n: str, a: dict | None) -> dict:
                f.write(json.dumps({"execute": n, **({"arguments": a} if a else {})}) + "\n")
                f.flush()
                while True:
                    line = f.readline()
                    if not line:
                        raise QmpError(f"QMP {n}: connection closed")
                    r = json.loads(line)
                    if "return" in r or "error" in r:
                        return r
            cmd("qmp_capabilities", None)
            r = cmd(name, args)
        self.log(f"QMP {name} {json.dumps(args)} -> {json.dumps(r)}")
        if "error" in r:
            raise QmpError(f"QMP {name}: {r['error']}")
        return r["return"]

    @staticmethod
    def _extents(extents: Sequence[tuple[int, int]]) -> list[dict]:
        return [{"offset": off, "len": ln} for off, ln in extents]

    def add_capacity(self, tag: str | None, extents: Sequence[tuple[int, int]],
                     region: int = 0) -> dict:
        """One add request: every extent carries ``tag`` (None: the null UUID,
        an untagged extent)."""
        args = {"path": DCD_PATH, "host-id": 0, "region": region,
                "selection-policy": "prescriptive", "extents": self._extents(extents)}
        if tag is not None:
            args["tag"] = str(uuidlib.UUID(tag))
        return self.execute("cxl-add-dynamic-capacity", args)

    def release_capacity(self, tag: str | None, extents: Sequence[tuple[int, int]],
                         region: int = 0) -> dict:
        """One release request (the kernel matches range and tag)."""
        args = {"path": DCD_PATH, "host-id": 0, "region": region,
                "removal-policy": "prescriptive", "extents": self._extents(extents)}
        if tag is not None:
            args["tag"] = str(uuidlib.UUID(tag))
        return self.execute("cxl-release-dynamic-capacity", args)

    def inject_poison(self, start: int, length: int) -> dict:
        """Poison ``length`` bytes at device physical address ``start``."""
        return self.execute("cxl-inject-poison",
                            {"path": DCD_PATH, "start": start, "length": length})


class Answers:
    """The host's side of ttyS1: short lines the guest waits for (it reads
    them with dcd_host_said). Connects once the guest asks the first time."""

    def __init__(self, sock: Path):
        self.sock = sock
        self._s: socket.socket | None = None

    def say(self, line: str) -> None:
        if self._s is None:
            self._s = socket.socket(socket.AF_UNIX)
            self._s.connect(str(self.sock))
        self._s.sendall(line.encode() + b"\n")

    def close(self) -> None:
        if self._s is not None:
            self._s.close()
            self._s = None


# --------------------------------------------------------------------------
# the guest side
# --------------------------------------------------------------------------

GUEST_DCD_SH = r"""# CXL DCD guest helpers (generated from tests/qemu/dcdkit.py).
DCD_CXL=/sys/bus/cxl/devices
DCD_REGION=
# With DCD_CLAIM=guest the administrator claims by hand, and tells tagmemfs
# not to (scenarios append their own sections to this file).
if [ "${DCD_CLAIM:-daemon}" = guest ]; then
    printf '# the administrator claims\n[defaults]\nclaim = manual\n\n' >/etc/tagmem/tagmem.conf
fi

# The administrator's step before any dynamic capacity can be used: a region
# of the memdev's dynamic_ram_1 partition. No cxl-cli in Debian knows that
# mode yet, so it is done the long way, through sysfs: ask the root decoder for
# a new region name, give it the root decoder's granularity and one way, put
# the endpoint decoder into dynamic_ram_1 mode with the whole partition, make
# the region that size with the endpoint as its only target, commit it and
# bind it. A DAX region with a 0-size seed device then appears.
dcd_make_region() {
    d_i=0
    until ls "$DCD_CXL" 2>/dev/null | grep -q '^mem'; do
        d_i=$((d_i + 1)); [ $d_i -lt 150 ] || { echo "dcd: no CXL memdev"; return 1; }
        sleep 0.2
    done
    d_root=
    for d in "$DCD_CXL"/decoder*; do
        [ -e "$d/create_dynamic_ram_1_region" ] && { d_root=$d; break; }
    done
    [ -n "$d_root" ] || { echo "dcd: no root decoder can make a dynamic_ram_1 region"; return 1; }
    d_mem=$(ls "$DCD_CXL" | grep -m1 '^mem')
    d_size=$(cat "$DCD_CXL/$d_mem/dynamic_ram_1/size")
    d_ep=
    for d in "$DCD_CXL"/decoder*; do [ -e "$d/dpa_size" ] && { d_ep=${d##*/}; break; }; done
    [ -n "$d_ep" ] || { echo "dcd: no endpoint decoder"; return 1; }
    DCD_REGION=$(cat "$d_root/create_dynamic_ram_1_region")
    echo "$DCD_REGION" >"$d_root/create_dynamic_ram_1_region"
    cat "$d_root/interleave_granularity" >"$DCD_CXL/$DCD_REGION/interleave_granularity"
    echo 1 >"$DCD_CXL/$DCD_REGION/interleave_ways"
    echo dynamic_ram_1 >"$DCD_CXL/$d_ep/mode"
    echo "$d_size" >"$DCD_CXL/$d_ep/dpa_size"
    echo "$d_size" >"$DCD_CXL/$DCD_REGION/size"
    echo "$d_ep" >"$DCD_CXL/$DCD_REGION/target0"
    echo 1 >"$DCD_CXL/$DCD_REGION/commit"
    echo "$DCD_REGION" >/sys/bus/cxl/drivers/cxl_region/bind 2>/dev/null || true
    d_i=0
    until ls -d "$DCD_CXL"/dax_region* >/dev/null 2>&1; do
        d_i=$((d_i + 1)); [ $d_i -lt 100 ] || { echo "dcd: no dax_region after commit"; return 1; }
        sleep 0.1
    done
    echo "DCD-EVENT: region $DCD_REGION from ${d_root##*/} and $d_ep, $d_size bytes," \
         "uptime=$(tm_now)"
}

# The DAX region directory (.../regionK/dax_regionK) of our one region.
dcd_dax_region() { readlink -f "$DCD_CXL"/dax_region* | head -n 1; }

# Every extent: NAME OFFSET LENGTH UUID (uuid "-" when the file is absent).
dcd_extents() {
    for e in "$(dcd_dax_region)"/extent*; do
        [ -e "$e" ] || continue
        echo "${e##*/} $(cat "$e/offset") $(cat "$e/length") $(cat "$e/uuid" 2>/dev/null || echo -)"
    done
}

# Every dax device of the region: NAME SIZE UUID DRIVER.
dcd_devices() {
    for d in "$(dcd_dax_region)"/dax[0-9]*; do
        [ -e "$d" ] || continue
        d_drv=$(readlink "$d/driver" 2>/dev/null || true)
        echo "${d##*/} $(cat "$d/size") $(cat "$d/uuid" 2>/dev/null || echo -) ${d_drv##*/}"
    done
}

# Wait (up to $2 s, default 60) until an extent carries tag $1.
dcd_wait_extent() { # TAG [SECONDS]
    d_i=0
    until dcd_extents | grep -q " $1\$"; do
        d_i=$((d_i + 1))
        [ $d_i -lt $((${2:-60} * 10)) ] || { echo "dcd: no extent with tag $1"; return 1; }
        sleep 0.1
    done
}

# Claim tag $1 by hand, as the administrator (or tagmemfs) would: a 0-size
# seed device (made with dax_region/create when there is none) takes the tag
# through its uuid, and so every extent that carries it; then device_dax.
dcd_claim() { # TAG
    d_r=$(dcd_dax_region)
    d_seed=
    for d in "$d_r"/dax[0-9]*; do
        [ -e "$d" ] && [ "$(cat "$d/size")" = 0 ] && { d_seed=${d##*/}; break; }
    done
    if [ -z "$d_seed" ]; then
        echo 1 >"$d_r/dax_region/create"
        d_seed=$(cat "$d_r/dax_region/seed")
    fi
    [ -n "$d_seed" ] || { echo "dcd_claim: no seed device in $d_r"; return 1; }
    echo "$1" >"/sys/bus/dax/devices/$d_seed/uuid"
    echo "$d_seed" >/sys/bus/dax/drivers/device_dax/bind
    echo "DCD-EVENT: claimed $1 by hand as $d_seed size=$(cat /sys/bus/dax/devices/$d_seed/size)" \
         "uptime=$(tm_now)"
}

# With DCD_CLAIM=guest ([defaults] claim = manual) the scenario claims the
# tag by hand; with DCD_CLAIM=daemon tagmemfs does it.
dcd_claim_unless_daemon() { # TAG
    if [ "${DCD_CLAIM:-daemon}" = guest ]; then dcd_wait_extent "$1" && dcd_claim "$1"; fi
}

# Ask the host for something (a console line it waits for) and wait for its
# answer on ttyS1 (read into /tmp/host.said by a reader started first).
dcd_ask() { # WORD...
    echo "DCD-ASK: $* uptime=$(tm_now)"
    d_i=0
    until grep -qx "DONE $*" /tmp/host.said 2>/dev/null; do
        d_i=$((d_i + 1))
        [ $d_i -lt 1200 ] || { echo "dcd_ask: no answer to '$*' in 120 s"; return 1; }
        sleep 0.1
    done
    echo "DCD-EVENT: host did '$*' uptime=$(tm_now)"
}

dcd_start_answers() {
    stty -F /dev/ttyS1 raw -echo 2>/dev/null || true
    cat /dev/ttyS1 >/tmp/host.said &
}

# Wait (up to $3 s) until `$1` prints $2 (for example a tag's state).
dcd_until() { # CMD WANT SECONDS
    d_i=0
    while [ "$(eval "$1" 2>/dev/null)" != "$2" ]; do
        d_i=$((d_i + 1))
        [ $d_i -lt $(($3 * 10)) ] || { echo "dcd_until: '$1' is '$(eval "$1" 2>&1)', want '$2'"; return 1; }
        sleep 0.1
    done
}

# The value of a top-level string field of a tag's metadata (busybox has no jq).
dcd_state() { # TAG
    sed -n 's/.*"state": *"\([a-z-]*\)".*/\1/p' "$TM_MNT/$1/metadata" 2>/dev/null | head -n 1
}
"""


class HostSide:
    """Answers one guest's DCD-ASK lines with QMP: ``handlers`` maps the
    words after DCD-ASK to a callable; the answer "DONE <words>" goes back on
    ttyS1 once it returned. Runs in the test's thread until the guest ends."""

    def __init__(self, guest: vmkit.Guest, qmp: Qmp, answers: Answers,
                 log: vmkit.Log = vmkit._default_log):
        self.guest, self.qmp, self.answers, self.log = guest, qmp, answers, log
        self.done: list[tuple[str, float]] = []  # (request, host seconds since guest start)

    def serve(self, handlers: dict, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        handled = 0
        while time.monotonic() < deadline and self.guest.proc.poll() is None:
            asks = [m.group(1) for _, line in list(self.guest._lines)
                    if (m := re.match(r"DCD-ASK: (.*?) uptime=", line))]
            for req in asks[handled:]:
                handled += 1
                if req not in handlers:
                    raise vmkit.VmError(f"guest {self.guest.name} asked for unknown '{req}'")
                handlers[req]()
                self.done.append((req, time.monotonic() - self.guest.t0))
                self.answers.say(f"DONE {req}")
            time.sleep(0.2)


def build_initrd(out: Path, scenario: str, *, assets: vmkit.Assets, product, tools,
                 log: vmkit.Log = vmkit._default_log) -> Path:
    """tagmemvm's initramfs plus /vmkit/dcd.sh, sourced before ``scenario``."""
    return tagmemvm.build_initrd(out, ". /vmkit/dcd.sh\n" + scenario, assets=assets,
                                 product=product, tools=tools, log=log,
                                 files={"/vmkit/dcd.sh": GUEST_DCD_SH.encode()})


def start_guest(paths: DcdPaths, dcd_assets: vmkit.Assets, initrd: Path, files: DcdGuestFiles,
                name: str, timeout_s: float, *, log_path: Path | None = None,
                env: dict[str, str] | None = None, smp: int = 2,
                nvdimm: vmkit.NvdimmSpec | None = None, echo: bool | None = None,
                log: vmkit.Log = vmkit._default_log) -> vmkit.Guest:
    """Start one DCD guest (DCD_CLAIM in its environment: :func:`claim_mode`)."""
    for p in (files.qmp, files.ctl):
        p.unlink(missing_ok=True)
    argv = qemu_argv(paths, dcd_assets, initrd, files, smp=smp, nvdimm=nvdimm,
                     env={"DCD_CLAIM": claim_mode(), **(env or {})})
    return vmkit.Guest(argv, name, timeout_s, log_path, echo, log)


def serve(guest: vmkit.Guest, files: DcdGuestFiles, handlers: dict, timeout_s: float,
          log: vmkit.Log = vmkit._default_log) -> HostSide:
    """Answer the guest's requests until it ends: ``handlers`` maps a request
    to ``lambda qmp: <callable doing it>``."""
    host = HostSide(guest, Qmp(files.qmp, log), Answers(files.ctl), log)
    try:
        host.serve({k: v(host.qmp) for k, v in handlers.items()}, timeout_s)
    finally:
        host.answers.close()
    return host


# --------------------------------------------------------------------------
# two hosts on one DC file (the test and the demo)
# --------------------------------------------------------------------------

SHARED_TAG = "d5d5d5d5-0017-4000-8000-0000000000d5"
SHARED_EXTENTS = [(256 * MiB, 128 * MiB)]


def two_hosts_scenario(rounds: int, handshake_timeout_s: int = 120) -> str:
    """Each host: make the region, start tagmemfs, ask its host for the
    capacity, wait for the tag, show it, ping-pong through data, stop."""
    t = SHARED_TAG
    return f"""
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
dcd_start_answers
dcd_make_region
tm_start
dcd_ask add T
dcd_wait_extent {t} 120
echo "DCD-EVENT: extent with the tag in sysfs uptime=$(tm_now)"
dcd_claim_unless_daemon {t}
tagmem wait {t} --timeout 120
dcd_until "dcd_state {t}" ready 30
echo "DCD-EVENT: tag ready in /run/tagmem dev=$(readlink $TM_MNT/{t}/dev) uptime=$(tm_now)"
tm_section extents dcd_extents
tm_section devices dcd_devices
tm_show {t}
echo "TM-EVENT: pingpong start uptime=$(tm_now)"
daxmap pingpong $TM_MNT/{t}/data "$TM_ROLE" {rounds} {handshake_timeout_s}
echo "TM-EVENT: pingpong done uptime=$(tm_now)"
tm_stop
"""


def run_two_hosts(paths: DcdPaths, dcd_assets: vmkit.Assets, initrd: Path, workdir: Path,
                  timeout_s: float, *, echo: bool | None = None,
                  on_start=None, on_add=None, log: vmkit.Log = vmkit._default_log):
    """Host A (ping) and host B (pong), one backing file: each is given
    SHARED_EXTENTS with SHARED_TAG over its own QMP when it asks.
    ``on_start(host letter, guest)`` is called once each guest runs,
    ``on_add(host letter)`` after each add. Returns (results, errors)."""
    import threading
    backing = backing_file(workdir / "dc-shared.img")
    guests, files, errors = [], [], []
    for host, role in (("A", "ping"), ("B", "pong")):
        f = DcdGuestFiles(backing, workdir / f"qmp-{host}.sock", workdir / f"ctl-{host}.sock")
        files.append(f)
        guests.append(start_guest(paths, dcd_assets, initrd, f, f"dcd-host-{host}", timeout_s,
                                  log_path=workdir / f"dcd-host-{host}.log", smp=1, echo=echo,
                                  env={"TM_HOST": host, "TM_ROLE": role}, log=log))
        if on_start:
            on_start(host, guests[-1])

    def one(g: vmkit.Guest, f: DcdGuestFiles, host: str) -> None:
        def add(q: Qmp):
            def run():
                q.add_capacity(SHARED_TAG, SHARED_EXTENTS)
                if on_add:
                    on_add(host)
            return run
        try:
            serve(g, f, {"add T": add}, timeout_s, log)
        except Exception as exc:  # reported after the guests end
            errors.append(exc)
            g.kill()

    threads = [threading.Thread(target=one, args=(g, f, h), daemon=True)
               for g, f, h in zip(guests, files, "AB")]
    for t in threads:
        t.start()
    results = tagmemvm.wait_all(guests)
    for t in threads:
        t.join(10)
    return results, errors
