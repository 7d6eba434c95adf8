# SPDX-License-Identifier: Apache-2.0
"""vmkit: throwaway QEMU guests that own *real* device-dax devices.

Why this exists: tagmem resolves memory tags (UUIDs) to ``/dev/daxX.Y``. On a
machine without CXL hardware the only mainline way to get real device-dax
devices that carry such a tag is an emulated NVDIMM with a label area and a
devdax namespace created with ``--uuid TAG`` (see
shared/reference/real-devdax-in-qemu.md). This module hides the plumbing:

* :func:`ensure_assets` - host tools from apt, plus a Debian kernel (6.12 from
  the machine's own apt sources, or the newest one in unstable: see
  :data:`KERNELS`) and the handful of NVDIMM/DAX modules, fetched once into a
  cache directory.
* :func:`build_initramfs` - busybox + ndctl + daxctl + whatever binaries and
  files a scenario needs, with an ``/init`` that runs the scenario shell script
  and prints one ``TAGMEM-VERDICT:`` line.
* :func:`boot` / :func:`start` / :func:`boot_many` - run guests under software
  emulation (no usable KVM here) with NVDIMMs backed by host files; several
  guests may share one backing file (``share=on``) to play "two hosts".
* :func:`prepare_nvdimm` - initialise labels and create tagged devdax
  namespaces once per backing file, remembered by a stamp file.

Only the Python 3 standard library is used. Nothing is written into the
source tree: downloads and generated images go to the cache directory
(``$TAGMEM_QEMU_CACHE``, else ``$TAGMEM_BUILD_DIR/qemu-cache``, else
``~/.cache/tagmem-qemu``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import gzip
import hashlib
import json
import lzma
import mmap
import os
import posixpath
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid as uuidlib
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, Union

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

#: Debian packages providing the host tools vmkit runs or copies into guests.
HOST_PACKAGES: dict[str, str] = {
    # package: a file it installs (presence check without asking dpkg)
    "qemu-system-x86": "/usr/bin/qemu-system-x86_64",
    "busybox-static": "/bin/busybox",
    "cpio": "/usr/bin/cpio",
    "ndctl": "/usr/bin/ndctl",
    "daxctl": "/usr/bin/daxctl",
    "xz-utils": "/usr/bin/xz",
    "zstd": "/usr/bin/zstd",
    "kmod": "/usr/sbin/modinfo",
}

@dataclasses.dataclass(frozen=True)
class KernelFlavor:
    """Which Debian kernel guests boot.

    ``meta`` is the meta-package whose ``linux-image-<kver>`` dependency names
    the exact image; ``suite`` is None for the machine's own apt sources, or a
    Debian suite read through a private apt configuration in the cache
    directory (its own sources, lists and package cache: the machine's apt
    state is never touched and it stays on its release)."""

    name: str
    meta: str
    suite: str | None = None


#: TAGMEM_QEMU_KERNEL picks one (default "6.12"). "unstable" is the newest
#: kernel Debian ships, so that kernel ABI drift (sysfs, libnvdimm, device_dax,
#: FUSE) shows up before it reaches a release.
KERNELS: dict[str, KernelFlavor] = {
    "6.12": KernelFlavor("6.12", "linux-image-6.12-amd64"),
    "unstable": KernelFlavor("unstable", "linux-image-amd64", "unstable"),
}
DEFAULT_KERNEL = "6.12"
#: Where the private apt configuration of a ``suite`` flavor downloads from.
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
#: A suite's private package lists are refreshed when older than this, so the
#: "newest kernel" follows the archive (offline, the cached kernel is used).
SUITE_LISTS_MAX_AGE_S = 24 * 3600


def kernel_flavor(name: str | None = None) -> KernelFlavor:
    """The flavor called ``name``, else $TAGMEM_QEMU_KERNEL, else 6.12."""
    name = name or os.environ.get("TAGMEM_QEMU_KERNEL") or DEFAULT_KERNEL
    if name not in KERNELS:
        raise VmError(f"TAGMEM_QEMU_KERNEL={name!r}: want one of {', '.join(KERNELS)}")
    return KERNELS[name]


#: Modules /init loads, in this order after dependency sorting. The dax core
#: (dax.ko) and FUSE are built into Debian's kernels (6.12 and 7.x alike).
AUTOLOAD_MODULES = ("libnvdimm", "nfit", "nd_btt", "nd_pmem", "dax_pmem", "device_dax")
#: Shipped in the guest but not loaded: scenarios can ``modprobe kmem``, and the
#: VM hand-off scenarios (issue 12) ``modprobe qemu_fw_cfg dax_hmem``: dax_hmem
#: makes devdax devices of soft-reserved ranges, qemu_fw_cfg shows the fw_cfg
#: items under /sys/firmware/qemu_fw_cfg.
EXTRA_MODULES = ("kmem", "dax_hmem", "qemu_fw_cfg")

VERDICT_RE = re.compile(r"TAGMEM-VERDICT: (PASS|FAIL rc=(\d+))")
#: Console lines that mean the guest kernel itself failed. After one, the guest
#: is killed after OOPS_GRACE_S (the trace and the scenario's last words get
#: printed), because a kernel that oopsed often hangs later (e.g. in sync on a
#: superblock whose s_umount the dead task held), and waiting out the timeout
#: helps nobody.
OOPS_RE = re.compile(r"\] (BUG: |Oops: |Kernel panic - |general protection fault|"
                     r"kernel BUG at |Unable to handle kernel )")
OOPS_GRACE_S = 8.0
STAGE_INIT = "TAGMEM-STAGE: init"
STAGE_SCENARIO = "TAGMEM-STAGE: scenario-start"

# Bump when the generated /init or guest library changes meaning, so cached
# base images are rebuilt (their content hash covers it anyway).
_GUEST_ABI = 1

Log = Callable[[str], None]


def _default_log(msg: str) -> None:
    print(f"[vmkit] {msg}", file=sys.stderr, flush=True)


class VmError(RuntimeError):
    """A guest or asset step failed; the message carries the useful context."""


class QemuUnavailable(VmError):
    """QEMU cannot run on this machine at all (the only reason tests may skip)."""


# --------------------------------------------------------------------------
# cache directory and host tools
# --------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Where downloads and generated images live: never the source tree."""
    if os.environ.get("TAGMEM_QEMU_CACHE"):
        return Path(os.environ["TAGMEM_QEMU_CACHE"])
    if os.environ.get("TAGMEM_BUILD_DIR"):
        return Path(os.environ["TAGMEM_BUILD_DIR"]) / "qemu-cache"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(xdg) / "tagmem-qemu"


@contextlib.contextmanager
def _locked(path: Path):
    """Serialise concurrent test runs that share one cache or backing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(argv: Sequence[str], log: Log | None = None, **kw) -> subprocess.CompletedProcess:
    """Run a host command, raising VmError with its output when it fails."""
    if log:
        log("$ " + shlex.join(str(a) for a in argv))
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.STDOUT)
    kw.setdefault("text", True)
    cp = subprocess.run([str(a) for a in argv], **kw)
    if cp.returncode != 0:
        raise VmError(f"command failed (rc={cp.returncode}): {shlex.join(map(str, argv))}\n"
                      f"{cp.stdout or ''}")
    return cp


_APT_OPTS = ["-o", "DPkg::Lock::Timeout=600", "-o", "APT::Sandbox::User=root"]


def ensure_host_tools(log: Log = _default_log) -> None:
    """apt-get install the host packages that are missing (root only).

    Why apt and nothing else: the machines only reach Debian's archive, and a
    project must install what it needs with its own files.
    """
    missing = [pkg for pkg, probe in HOST_PACKAGES.items() if not os.path.exists(probe)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise QemuUnavailable(f"missing host packages {missing} and not root to install them")
    log(f"installing host packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        _run(["apt-get", *_APT_OPTS, "install", "-y", "-q", "--no-install-recommends", *missing],
             env=env)
    except VmError:
        _run(["apt-get", *_APT_OPTS, "update", "-q"], log, env=env)
        _run(["apt-get", *_APT_OPTS, "install", "-y", "-q", "--no-install-recommends", *missing],
             log, env=env)


def qemu_binary() -> str:
    return shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"


def probe_qemu() -> str:
    """Return the QEMU version line, or raise QemuUnavailable with the reason."""
    qemu = qemu_binary()
    if not os.access(qemu, os.X_OK):
        raise QemuUnavailable(f"{qemu} not found")
    try:
        cp = subprocess.run([qemu, "-machine", "none", "-accel", "tcg", "-nodefaults",
                             "-display", "none", "-monitor", "stdio"], input="quit\n",
                            capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise QemuUnavailable(f"{qemu} does not start: {exc}") from exc
    if cp.returncode != 0:
        raise QemuUnavailable(f"{qemu} -machine none failed rc={cp.returncode}: {cp.stderr[-500:]}")
    ver = subprocess.run([qemu, "--version"], capture_output=True, text=True)
    return ver.stdout.splitlines()[0] if ver.stdout else "qemu (unknown version)"


# --------------------------------------------------------------------------
# kernel assets
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Module:
    name: str
    path: Path  # decompressed .ko inside Assets.modroot
    autoload: bool


@dataclasses.dataclass
class Assets:
    """The guest kernel and modules, unpacked in the cache directory."""

    cache_dir: Path
    package: str
    kver: str
    kernel: Path  # vmlinuz
    modroot: Path  # holds lib/modules/<kver>/..., copied into guests as is
    modules: list[Module]  # dependency order
    downloaded: bool  # this call fetched the .deb (False on a cache hit)
    timings: dict[str, float]
    flavor: str = DEFAULT_KERNEL  # a KERNELS key

    @property
    def autoload(self) -> list[Module]:
        return [m for m in self.modules if m.autoload]


def _apt_opts(flavor: KernelFlavor, cache: Path) -> list[str]:
    """apt options for ``flavor``: the machine's configuration, or a private
    one for a suite (created on first use) that shares nothing with it."""
    if flavor.suite is None:
        return list(_APT_OPTS)
    root = cache / f"apt-{flavor.suite}"
    for sub in ("lists/partial", "cache/archives/partial", "sources.list.d"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    sources = root / "sources.list"
    line = f"deb [signed-by={DEBIAN_KEYRING}] {DEBIAN_MIRROR} {flavor.suite} main\n"
    if not sources.is_file() or sources.read_text() != line:
        sources.write_text(line)
    return [*_APT_OPTS, "-o", f"Dir::Etc::sourcelist={sources}",
            "-o", f"Dir::Etc::sourceparts={root / 'sources.list.d'}",
            "-o", f"Dir::State::Lists={root / 'lists'}", "-o", f"Dir::Cache={root / 'cache'}",
            "-o", "Acquire::Languages=none"]


def _apt_update(flavor: KernelFlavor, cache: Path, log: Log) -> None:
    _run(["apt-get", *_apt_opts(flavor, cache), "update", "-q"], log,
         env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def _suite_lists_stale(flavor: KernelFlavor, cache: Path) -> bool:
    if flavor.suite is None:
        return False  # the machine's lists are the machine's business
    lists = [p for p in (cache / f"apt-{flavor.suite}" / "lists").glob("*_Packages*")]
    return not lists or time.time() - max(p.stat().st_mtime for p in lists) > SUITE_LISTS_MAX_AGE_S


def _resolve_kernel_package(flavor: KernelFlavor, cache: Path) -> str | None:
    """Exact image package behind the flavor's meta-package, from apt lists."""
    pinned = os.environ.get("TAGMEM_QEMU_KERNEL_PKG")
    if pinned:
        return pinned
    cp = subprocess.run(["apt-cache", *_apt_opts(flavor, cache), "depends", flavor.meta],
                        capture_output=True, text=True)
    for line in cp.stdout.splitlines():
        m = re.match(r"\s*Depends:\s*(linux-image-\d\S*-amd64)\s*$", line)
        if m:
            return m.group(1)
    return None


def _module_index(kdir: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for p in kdir.rglob("*.ko*"):
        name = p.name.split(".ko")[0].replace("-", "_")
        index.setdefault(name, p)
    return index


def _decompress_module(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.name.endswith(".ko.xz"):
        dst.write_bytes(lzma.decompress(src.read_bytes()))
    elif src.name.endswith(".ko.zst"):
        with open(dst, "wb") as out:
            _run(["zstd", "-dc", src], stdout=out, text=False)
    elif src.name.endswith(".ko.gz"):
        dst.write_bytes(gzip.decompress(src.read_bytes()))
    else:
        shutil.copyfile(src, dst)


def _sort_modules(wanted: Iterable[str], deps: Callable[[str], list[str]]) -> list[str]:
    """Depth-first topological order, stable with respect to ``wanted``."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise VmError(f"module dependency cycle at {name}")
        visiting.add(name)
        for dep in deps(name):
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in wanted:
        visit(name)
    return order


def _load_manifest(kdir: Path, cache_dir: Path, downloaded: bool,
                   timings: dict[str, float]) -> Assets | None:
    mf = kdir / "manifest.json"
    if not mf.is_file():
        return None
    data = json.loads(mf.read_text())
    mods = [Module(m["name"], kdir / m["file"], m["autoload"]) for m in data["modules"]]
    kernel = kdir / data["kernel"]
    if not kernel.is_file() or not all(m.path.is_file() for m in mods):
        return None
    if not {*AUTOLOAD_MODULES, *EXTRA_MODULES} <= {m.name for m in mods}:
        return None  # unpacked before a module was added to the lists: unpack again
    return Assets(cache_dir, data["package"], data["kver"], kernel, kdir / "modroot", mods,
                  downloaded, timings, data.get("flavor", DEFAULT_KERNEL))


def _cached_kernels(cache: Path, flavor: KernelFlavor) -> list[Path]:
    """Unpacked kernels of ``flavor`` in the cache, newest last."""
    out = []
    for mf in cache.glob("kernels/linux-image-*/manifest.json"):
        if json.loads(mf.read_text()).get("flavor", DEFAULT_KERNEL) == flavor.name:
            out.append(mf.parent)
    return sorted(out, key=lambda p: p.stat().st_mtime)


def ensure_assets(cache_dir: os.PathLike | str | None = None, log: Log = _default_log,
                  install_host_tools: bool = True, kernel: str | None = None) -> Assets:
    """Make the guest kernel and modules available in ``cache_dir``.

    ``kernel`` names a :data:`KERNELS` flavor (default: $TAGMEM_QEMU_KERNEL,
    else 6.12). First run: ``apt-get download`` of the exact image package
    (and, for kernels packaged in parts, its linux-binary/-modules/-base
    packages), ``dpkg-deb -x``, decompress the NVDIMM/DAX modules (plus their
    ``modinfo`` deps), ``depmod`` that small tree, keep the kernel, drop the
    unpacked rest. A later run with the same package is a pure cache hit and
    downloads nothing.
    """
    flavor = kernel_flavor(kernel)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    if install_host_tools:
        t0 = time.monotonic()
        ensure_host_tools(log)
        timings["host_tools_s"] = time.monotonic() - t0
    with _locked(cache / ".assets.lock"):
        if _suite_lists_stale(flavor, cache) and not os.environ.get("TAGMEM_QEMU_KERNEL_PKG"):
            try:
                log(f"refreshing the private {flavor.suite} package lists")
                _apt_update(flavor, cache, log)
            except VmError as exc:  # offline: a cached kernel will do
                log(f"cannot refresh {flavor.suite} lists: {str(exc).splitlines()[0]}")
        pkg = _resolve_kernel_package(flavor, cache)
        if pkg is None:
            existing = _cached_kernels(cache, flavor)
            if existing:  # offline and apt lists gone: use what we have
                pkg = existing[-1].name
                log(f"apt lists do not name a {flavor.name} kernel; using cached {pkg}")
            else:
                log(f"apt lists do not know the {flavor.name} kernel yet: apt-get update")
                _apt_update(flavor, cache, log)
                pkg = _resolve_kernel_package(flavor, cache)
                if pkg is None:
                    raise VmError(f"apt-cache depends {flavor.meta} names no image")
        kdir = cache / "kernels" / pkg
        hit = _load_manifest(kdir, cache, False, timings)
        if hit:
            log(f"kernel assets: cache hit {pkg} ({hit.kver}) in {kdir}")
            return hit

        try:
            return _fetch_kernel(cache, flavor, pkg, kdir, timings, log)
        except VmError as exc:
            for older_dir in reversed(_cached_kernels(cache, flavor)):
                older = _load_manifest(older_dir, cache, False, timings)
                if older:
                    log(f"cannot fetch {pkg} ({str(exc).splitlines()[0]}); "
                        f"using cached {older.package}")
                    return older
            raise


def _download(flavor: KernelFlavor, cache: Path, debs: Path, pkg: str, log: Log) -> Path:
    """The .deb of ``pkg`` in ``debs``, downloaded unless already there."""
    found = sorted(debs.glob(f"{pkg}_*.deb"))
    if found:
        log(f"reusing downloaded {found[-1].name}")
        return found[-1]
    log(f"downloading {pkg} into {debs}")
    opts = _apt_opts(flavor, cache)
    try:
        _run(["apt-get", *opts, "download", pkg], log, cwd=debs)
    except VmError:  # stale lists: the pool file moved on
        _apt_update(flavor, cache, log)
        _run(["apt-get", *opts, "download", pkg], log, cwd=debs)
    found = sorted(debs.glob(f"{pkg}_*.deb"))
    if not found:
        raise VmError(f"apt-get download {pkg} left no .deb in {debs}")
    return found[-1]


#: Since Linux 6.16 or so Debian splits a kernel: linux-image-<kver> is nearly
#: empty and depends on these, which hold vmlinuz, the modules and the
#: modules.* metadata (all under /usr/lib/modules/<kver>).
_KERNEL_PARTS_RE = re.compile(r"^(linux-(?:binary|modules|base)-\d\S*)\s+\(=")


def _kernel_parts(deb: Path) -> list[str]:
    depends = _run(["dpkg-deb", "-f", deb, "Depends"]).stdout
    return [m.group(1) for dep in depends.split(",")
            if (m := _KERNEL_PARTS_RE.match(dep.strip()))]


def _fetch_kernel(cache: Path, flavor: KernelFlavor, pkg: str, kdir: Path,
                  timings: dict[str, float], log: Log) -> Assets:
    """Download (unless the .debs are already cached) and unpack one kernel."""
    debs = cache / "debs"
    debs.mkdir(exist_ok=True)
    t0 = time.monotonic()
    had = {p.name for p in debs.glob("*.deb")}
    deb = _download(flavor, cache, debs, pkg, log)
    parts = [_download(flavor, cache, debs, part, log) for part in _kernel_parts(deb)]
    downloaded = any(p.name not in had for p in (deb, *parts))
    timings["download_s"] = time.monotonic() - t0
    log(f"{', '.join(p.name for p in (deb, *parts))}: "
        f"{sum(p.stat().st_size for p in (deb, *parts)) / MiB:.1f} MiB, fetched in "
        f"{timings['download_s']:.1f}s")

    t0 = time.monotonic()
    kdir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=kdir.parent, prefix=".unpack-") as tmp:
        root = Path(tmp) / "root"
        for d in (deb, *parts):
            log(f"unpacking {d.name}")
            _run(["dpkg-deb", "-x", d, root])
        # /lib/modules (6.12) or /usr/lib/modules (split packages).
        kvers = [p for top in ("lib/modules", "usr/lib/modules") if (root / top).is_dir()
                 for p in (root / top).iterdir()]
        if len(kvers) != 1:
            raise VmError(f"expected one lib/modules/<kver> in {deb.name}, got {kvers}")
        src_mods = kvers[0]
        kver = src_mods.name
        index = _module_index(src_mods / "kernel")

        def deps(name: str) -> list[str]:
            if name not in index:
                raise VmError(f"module {name} not in {deb.name}")
            out = _run(["modinfo", "-F", "depends", index[name]]).stdout.strip()
            return [d.replace("-", "_") for d in out.split(",") if d]

        order = _sort_modules([*AUTOLOAD_MODULES, *EXTRA_MODULES], deps)
        autoload = set(_sort_modules(AUTOLOAD_MODULES, deps))
        stage = Path(tmp) / "out"
        modroot = stage / "modroot"
        mod_dst = modroot / "lib/modules" / kver
        entries = []
        for name in order:
            rel = index[name].relative_to(src_mods)
            rel_ko = Path(str(rel).split(".ko")[0] + ".ko")
            _decompress_module(index[name], mod_dst / rel_ko)
            entries.append({"name": name, "file": str(Path("modroot/lib/modules") / kver / rel_ko),
                            "autoload": name in autoload})
        for meta in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
            if (src_mods / meta).exists():
                shutil.copyfile(src_mods / meta, mod_dst / meta)
        if shutil.which("depmod"):  # lets busybox modprobe/kmod find kmem
            _run(["depmod", "-b", modroot, kver])
        vmlinuz = [p for p in (root / "boot" / f"vmlinuz-{kver}", src_mods / "vmlinuz")
                   if p.is_file()]
        if not vmlinuz:
            raise VmError(f"no vmlinuz for {kver} in {deb.name} and its parts")
        shutil.copyfile(vmlinuz[0], stage / "vmlinuz")
        version = _run(["dpkg-deb", "-f", deb, "Version"]).stdout.strip()
        (stage / "manifest.json").write_text(json.dumps(
            {"package": pkg, "version": version, "kver": kver, "kernel": "vmlinuz",
             "flavor": flavor.name, "modules": entries}, indent=2) + "\n")
        if kdir.exists():
            shutil.rmtree(kdir)
        stage.rename(kdir)
    timings["unpack_s"] = time.monotonic() - t0
    log(f"kernel {kver}: modules {', '.join(order)} "
        f"(autoload {len(autoload)}); unpacked in {timings['unpack_s']:.1f}s")
    assets = _load_manifest(kdir, cache, downloaded, timings)
    assert assets is not None
    return assets


_assets_memo: dict[tuple[Path, str], Assets] = {}


def _assets(assets: Assets | None) -> Assets:
    """Default assets for callers that do not pass any (memoised per process)."""
    if assets is not None:
        return assets
    key = (default_cache_dir(), kernel_flavor().name)
    if key not in _assets_memo:
        _assets_memo[key] = ensure_assets(key[0], kernel=key[1])
    return _assets_memo[key]


# --------------------------------------------------------------------------
# initramfs: an in-memory tree written as newc cpio
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GuestFile:
    """File content for a guest path: bytes, or a host file to copy."""

    content: bytes | str | os.PathLike  # str/PathLike = host path
    mode: int | None = None  # default: host mode, or 0o644 for bytes


FileSpec = Union[bytes, str, os.PathLike, GuestFile]


@dataclasses.dataclass
class _Entry:
    kind: str  # dir | file | symlink | chr
    mode: int
    src: str | None = None
    data: bytes | None = None
    target: str | None = None
    rdev: tuple[int, int] = (0, 0)

    def key(self) -> tuple:
        if self.kind == "file" and self.src is not None:
            st = os.stat(self.src)
            return (self.kind, self.mode, self.src, st.st_size, st.st_mtime_ns)
        digest = hashlib.sha256(self.data).hexdigest() if self.data is not None else None
        return (self.kind, self.mode, digest, self.target, self.rdev)


class Tree:
    """The file tree of one initramfs segment.

    Why our own cpio writer: entries can be bytes or host files without a
    staging directory, device nodes need no root, the output is reproducible
    (mtime 0, uid 0), and a scenario segment can be appended to a cached base
    segment (the kernel unpacks concatenated archives in order, later entries
    replacing earlier ones).

    Paths are resolved through the tree's own symlinks, so with the host's
    merged-/usr links mirrored (``/lib -> usr/lib``) every file lands where the
    guest's dynamic loader will look for it.
    """

    def __init__(self, base: Tree | None = None):
        self._base: dict[str, _Entry] = dict(base._all()) if base else {}
        self._own: dict[str, _Entry] = {}

    # -- lookups -----------------------------------------------------------
    def _all(self) -> dict[str, _Entry]:
        return {**self._base, **self._own}

    def _get(self, path: str) -> _Entry | None:
        return self._own.get(path) or self._base.get(path)

    def exists(self, path: str) -> bool:
        return self._get(self.resolve(path, create=False)) is not None

    def resolve(self, path: str, create: bool = True, _depth: int = 0) -> str:
        """Guest path with symlinked directory components followed."""
        if _depth > 40:
            raise VmError(f"symlink loop resolving {path}")
        parts = [p for p in path.split("/") if p and p != "."]
        cur = "/"
        for i, comp in enumerate(parts):
            if comp == "..":
                cur = posixpath.dirname(cur)
                continue
            nxt = posixpath.join(cur, comp)
            ent = self._get(nxt)
            last = i == len(parts) - 1
            if not last:
                if ent is not None and ent.kind == "symlink":
                    tgt = posixpath.normpath(posixpath.join(cur, ent.target or ""))
                    return self.resolve(posixpath.join(tgt, *parts[i + 1:]), create, _depth + 1)
                if ent is None:
                    if not create:
                        return posixpath.join(cur, *parts[i:])
                    self._own[nxt] = _Entry("dir", 0o755)
                elif ent.kind != "dir":
                    raise VmError(f"{nxt} is a {ent.kind}, cannot hold {path}")
            cur = nxt
        return cur

    def _put(self, path: str, ent: _Entry) -> str:
        real = self.resolve(path)
        if real == "/":
            return real
        if self._base.get(real) is not None and self._base[real].key() == ent.key():
            return real  # already in the base segment
        self._own[real] = ent
        return real

    # -- adding things -----------------------------------------------------
    def mkdir(self, path: str, mode: int = 0o755) -> str:
        return self._put(path, _Entry("dir", mode))

    def symlink(self, path: str, target: str) -> str:
        return self._put(path, _Entry("symlink", 0o777, target=target))

    def chardev(self, path: str, major: int, minor: int, mode: int = 0o600) -> str:
        return self._put(path, _Entry("chr", mode, rdev=(major, minor)))

    def add_bytes(self, path: str, data: bytes | str, mode: int = 0o644) -> str:
        if isinstance(data, str):
            data = data.encode()
        return self._put(path, _Entry("file", mode, data=data))

    def add_host_file(self, path: str, host_path: os.PathLike | str,
                      mode: int | None = None) -> str:
        host_path = os.path.realpath(host_path)
        st = os.stat(host_path)
        return self._put(path, _Entry("file", mode if mode is not None else st.st_mode & 0o7777,
                                      src=host_path))

    def add_host_tree(self, path: str, host_dir: os.PathLike | str) -> None:
        """Copy a host directory recursively (config dirs and the like)."""
        host_dir = Path(host_dir)
        self.mkdir(path)
        for child in sorted(host_dir.iterdir()):
            dst = posixpath.join(path, child.name)
            if child.is_symlink():
                self.symlink(dst, os.readlink(child))
            elif child.is_dir():
                self.add_host_tree(dst, child)
            else:
                self.add_host_file(dst, child)

    def add(self, path: str, spec: FileSpec) -> str:
        """Add a file from any FileSpec (see build_initramfs)."""
        mode = None
        if isinstance(spec, GuestFile):
            mode, spec = spec.mode, spec.content
        if isinstance(spec, bytes):
            return self.add_bytes(path, spec, 0o644 if mode is None else mode)
        if not os.path.exists(spec):
            raise VmError(f"guest file {path}: no host file {str(spec)[:80]!r} "
                          "(pass bytes for literal content)")
        if os.path.isdir(spec):
            self.add_host_tree(path, spec)
            return path
        return self.add_host_file(path, spec, mode)

    def mirror_host_path(self, host_path: str, _depth: int = 0) -> str:
        """Place a host file at the same guest path, recreating the host's
        symlinks along the way (``/lib64 -> usr/lib64``, ``libfoo.so.1 ->
        libfoo.so.1.2``). Returns the guest path of the real file."""
        if _depth > 40:
            raise VmError(f"symlink loop mirroring {host_path}")
        parts = [p for p in os.path.normpath(host_path).split("/") if p]
        cur = "/"
        for i, comp in enumerate(parts):
            nxt = posixpath.join(cur, comp)
            if os.path.islink(nxt):
                target = os.readlink(nxt)
                if self._get(nxt) is None:
                    self._own[nxt] = _Entry("symlink", 0o777, target=target)
                resolved = posixpath.normpath(posixpath.join(cur, target))
                return self.mirror_host_path(posixpath.join(resolved, *parts[i + 1:]), _depth + 1)
            if i == len(parts) - 1 and not os.path.isdir(nxt):
                return self.add_host_file(nxt, nxt)
            ent = self._get(nxt)
            if ent is None:
                self._own[nxt] = _Entry("dir", os.stat(nxt).st_mode & 0o7777)
            cur = nxt
        return cur

    def add_binary(self, host_path: str, guest_path: str | None = None) -> str:
        """A host executable plus every shared library ``ldd`` lists and the
        dynamic loader, at the paths the guest loader will search."""
        real = shutil.which(host_path) if "/" not in host_path else host_path
        if not real or not os.path.isfile(real):
            raise VmError(f"binary not found: {host_path}")
        for lib in shared_libraries(real):
            self.mirror_host_path(lib)
        if guest_path is None:
            return self.mirror_host_path(os.path.abspath(real))
        return self.add_host_file(guest_path, real, os.stat(real).st_mode & 0o7777 | 0o111)

    # -- output ------------------------------------------------------------
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for path in sorted(self._own):
            h.update(repr((path, self._own[path].key())).encode())
        return h.hexdigest()

    def write_cpio(self, out) -> None:
        """Write this segment's own entries as a newc cpio archive."""
        ino = 1000

        def emit(name: str, mode: int, data: bytes, rdev=(0, 0), nlink=1):
            nonlocal ino
            ino += 1
            nb = name.encode() + b"\0"
            hdr = "070701" + "".join(f"{v:08x}" for v in (
                ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(nb), 0))
            out.write(hdr.encode() + nb + b"\0" * (-(110 + len(nb)) % 4))
            out.write(data + b"\0" * (-len(data) % 4))

        for path in sorted(self._own, key=lambda p: p.split("/")):
            ent = self._own[path]
            name = path.lstrip("/")
            if ent.kind == "dir":
                emit(name, 0o040000 | ent.mode, b"", nlink=2)
            elif ent.kind == "symlink":
                emit(name, 0o120000 | 0o777, (ent.target or "").encode())
            elif ent.kind == "chr":
                emit(name, 0o020000 | ent.mode, b"", rdev=ent.rdev)
            else:
                data = ent.data if ent.data is not None else Path(ent.src or "").read_bytes()
                emit(name, 0o100000 | ent.mode, data)
        emit("TRAILER!!!", 0, b"")


def shared_libraries(binary: str) -> list[str]:
    """Host paths of the dynamic loader and libraries ``binary`` needs."""
    cp = subprocess.run(["ldd", binary], capture_output=True, text=True)
    text = cp.stdout + cp.stderr
    if cp.returncode != 0 or "not a dynamic executable" in text or "statically linked" in text:
        return []
    libs = []
    for line in cp.stdout.splitlines():
        if "=> not found" in line:
            raise VmError(f"{binary}: library missing on host: {line.strip()}")
        m = re.match(r"\s*\S+ => (/\S+) \(", line) or re.match(r"\s*(/\S+) \(0x", line)
        if m:
            libs.append(m.group(1))
    return libs


# --------------------------------------------------------------------------
# guest /init and shell library
# --------------------------------------------------------------------------

GUEST_LIB = r"""# vmkit guest library, sourced before every scenario (set -e is on).
vmkit_log() { echo "vmkit: $*"; }

# Wait until libnvdimm finished probing and devtmpfs made every dax node.
vmkit_settle() {
    for w in /sys/bus/nd/devices/ndbus*/wait_probe; do
        [ -e "$w" ] && cat "$w" >/dev/null
    done
    i=0
    for d in /sys/bus/dax/devices/*; do
        [ -e "$d" ] || continue
        while [ ! -c "/dev/${d##*/}" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    done
    return 0
}

# First use of a label area: wipe it and enable labelled mode.
vmkit_init_labels() { # [REGION] [NMEM]
    ndctl disable-region "${1:-region0}"
    ndctl init-labels -f "${2:-nmem0}"
    ndctl enable-region "${1:-region0}"
}

# -M mem: the struct pages of the namespace live in guest RAM, not in the
# namespace itself (ndctl's default, "dev"): guests sharing a backing file
# would otherwise overwrite each other's struct pages, and since device-dax
# maps folios (Linux 7.x) the kernel then oopses in zap_huge_pmd at munmap.
vmkit_create_devdax() { # TAG [SIZE] [ALIGN] [REGION]
    ndctl create-namespace -r "${4:-region0}" -m devdax -M mem --uuid "$1" -a "${3:-2M}" \
        -s "${2:-256M}"
}

# /dev/daxX.Y whose namespace UUID (the tag) is $1; fails if none.
vmkit_dax_for_tag() {
    for d in /sys/bus/dax/devices/*; do
        [ -e "$d" ] || continue
        real=$(readlink -f "$d")
        nd=${real%/*}
        [ -r "$nd/namespace" ] || continue
        ns=$(cat "$nd/namespace")
        if [ "$(cat "${nd%/*}/$ns/uuid" 2>/dev/null)" = "$1" ]; then
            echo "/dev/${d##*/}"
            return 0
        fi
    done
    echo "vmkit: no dax device carries tag $1" >&2
    return 1
}

# Print a command's output between markers that BootResult.section() finds.
vmkit_section() { # NAME CMD...
    n=$1; shift
    echo "VMKIT-BEGIN $n"
    "$@"
    r=$?
    echo "VMKIT-END $n rc=$r"
    return $r
}
"""

INIT_TEMPLATE = r"""#!/bin/sh
# vmkit guest /init (generated; see tests/qemu/vmkit.py)
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
echo "TAGMEM-STAGE: init uptime=$(cut -d' ' -f1 /proc/uptime)"
for m in @MODULES@; do
    insmod "$m" || echo "vmkit: insmod $m failed"
done
. /vmkit/lib.sh
vmkit_settle
echo "TAGMEM-STAGE: scenario-start uptime=$(cut -d' ' -f1 /proc/uptime)"
sh -e /vmkit/scenario.sh </dev/null 2>&1
rc=$?
sync
echo "TAGMEM-STAGE: scenario-end uptime=$(cut -d' ' -f1 /proc/uptime)"
if [ $rc -eq 0 ]; then
    echo "TAGMEM-VERDICT: PASS"
else
    echo "TAGMEM-VERDICT: FAIL rc=$rc"
fi
poweroff -f
echo o > /proc/sysrq-trigger
"""

_PASSWD = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/tmp:/bin/sh\n" \
          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n"


def base_tree(assets: Assets) -> Tree:
    """Everything every guest has: busybox, ndctl, daxctl, modules, /init."""
    t = Tree()
    for top in ("/bin", "/sbin", "/lib", "/lib64"):
        if os.path.islink(top):  # merged /usr, as on the host
            t.symlink(top, os.readlink(top))
    for d in ("/proc", "/sys", "/dev", "/run", "/tmp", "/root", "/etc", "/mnt", "/var",
              "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin", "/vmkit"):
        t.mkdir(d, 0o1777 if d == "/tmp" else 0o755)
    t.chardev("/dev/console", 5, 1)
    t.chardev("/dev/null", 1, 3, 0o666)
    bb = t.mirror_host_path("/bin/busybox")
    for tool in ("/usr/bin/ndctl", "/usr/bin/daxctl"):
        t.add_binary(tool)
    applets = _run([bb if os.path.exists(bb) else "/bin/busybox", "--list-full"]).stdout.split()
    for applet in applets:
        if not t.exists("/" + applet):  # real tools win over applets
            t.symlink("/" + applet, "/bin/busybox")
    t.add_host_tree("/lib/modules", assets.modroot / "lib/modules")
    t.add_bytes("/etc/passwd", _PASSWD)
    t.add_bytes("/etc/group", _GROUP)
    t.add_bytes("/etc/hostname", "vmkit\n")
    t.add_bytes("/vmkit/lib.sh", GUEST_LIB)
    mods = " ".join(shlex.quote("/" + str(m.path.relative_to(assets.modroot)))
                    for m in assets.autoload)
    t.add_bytes("/init", INIT_TEMPLATE.replace("@MODULES@", mods), 0o755)
    t.add_bytes("/vmkit/abi", f"{_GUEST_ABI}\n")
    return t


def _segment_bytes(tree: Tree, compress: str) -> bytes:
    import io
    buf = io.BytesIO()
    tree.write_cpio(buf)
    raw = buf.getvalue()
    if compress == "gzip":
        return gzip.compress(raw, compresslevel=1, mtime=0)
    if compress == "none":
        return raw
    raise ValueError(f"compress must be 'none' or 'gzip', not {compress!r}")


BinarySpec = Union[str, os.PathLike, tuple]


def build_initramfs(out_path: os.PathLike | str,
                    binaries: Sequence[BinarySpec] = (),
                    files: Mapping[str, FileSpec] | None = None,
                    scenario: str = "true\n",
                    *, assets: Assets | None = None, compress: str = "none",
                    log: Log = _default_log) -> Path:
    """Write a bootable initramfs for one scenario to ``out_path``.

    ``binaries``: host executables; each goes to ``/usr/local/bin/<name>``
    (first in PATH), or to ``guest`` when given as ``(host, guest)``; a bare
    name is looked up in the host PATH. Their ``ldd`` libraries and the loader
    come along.
    ``files``: ``{guest_path: spec}`` where spec is ``bytes`` (content, mode
    0644), a host path (file, or directory copied recursively; host mode), or a
    :class:`GuestFile` for an explicit mode.
    ``scenario``: shell text run as ``sh -e`` after ``/vmkit/lib.sh`` is
    sourced; a non-zero exit gives ``TAGMEM-VERDICT: FAIL rc=N``.

    The base segment (busybox, ndctl, daxctl, modules, /init) is cached in the
    cache dir keyed by its content; only the scenario segment is written anew.
    ``compress='none'`` is the default: measured here, a gzip'd image (5 MiB
    instead of 11) reaches /init no sooner under TCG and costs time to build.
    """
    assets = _assets(assets)
    out_path = Path(out_path)
    t0 = time.monotonic()
    base = base_tree(assets)
    key = hashlib.sha256(f"{base.fingerprint()}:{compress}".encode()).hexdigest()[:16]
    cache = assets.cache_dir / "initramfs" / f"base-{key}.cpio{'.gz' if compress == 'gzip' else ''}"
    if not cache.is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(cache.suffix + f".{os.getpid()}.tmp")
        tmp.write_bytes(_segment_bytes(base, compress))
        tmp.rename(cache)
        log(f"built base initramfs {cache.name} ({cache.stat().st_size / MiB:.1f} MiB)")

    seg = Tree(base)
    for spec in binaries:
        if isinstance(spec, tuple):
            host, guest = spec
            seg.add_binary(str(host), guest)
        else:
            host = str(spec)
            seg.add_binary(host, "/usr/local/bin/" + os.path.basename(host))
    for guest_path, fspec in (files or {}).items():
        seg.add(guest_path, fspec)
    seg.add_bytes("/vmkit/scenario.sh",
                  "# scenario (generated)\n. /vmkit/lib.sh\n" + scenario.rstrip("\n") + "\n", 0o755)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out_path.with_name(out_path.name + f".{os.getpid()}.tmp")
    with open(tmp_out, "wb") as out:
        with open(cache, "rb") as src:
            shutil.copyfileobj(src, out)
        out.write(_segment_bytes(seg, compress))
    tmp_out.rename(out_path)
    log(f"initramfs {out_path} ({out_path.stat().st_size / MiB:.1f} MiB) in "
        f"{time.monotonic() - t0:.2f}s")
    return out_path


# --------------------------------------------------------------------------
# booting
# --------------------------------------------------------------------------


def _parse_size(v: int | str) -> int:
    if isinstance(v, int):
        return v
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)i?B?\s*", v, re.I)
    if not m:
        raise ValueError(f"bad size {v!r}")
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m.group(2).upper()]


def _align_up(v: int, a: int) -> int:
    return (v + a - 1) // a * a


@dataclasses.dataclass
class NvdimmSpec:
    """One emulated NVDIMM backed by a host file.

    ``addr`` is the guest-physical address; ``None`` picks consecutive 1 GiB
    aligned slots above RAM, because two NVDIMMs without explicit addresses
    give a region "misaligned to 16M" in which namespaces cannot be created.
    ``share=True`` maps the file MAP_SHARED: required for the host (and other
    guests) to see what a guest writes.
    ``label_size=0`` gives a label-less NVDIMM: one "io" namespace without a
    UUID, which ``ndctl create-namespace -f -e namespaceN.0 -m devdax`` turns
    into an untagged dax device (see :func:`prepare_labelless_devdax`).
    ``node`` is the NUMA proximity domain QEMU puts in the NFIT (the dax
    device's ``target_node``); the guest needs ``-numa`` options that define it
    (:func:`numa_args`).
    ``slot`` is the DIMM slot; QEMU derives the NFIT handle and serial number
    from it, and those enter the labels' interleave-set cookie: namespaces
    created with the NVDIMM in one slot are ignored (the region shows only
    its free space) when it sits in another. :func:`prepare_nvdimm` boots it
    alone, in slot 0, so a labelled NVDIMM must stay in slot 0: the first
    device, or ``slot=0`` explicitly with the others in higher slots.
    """

    path: os.PathLike | str
    size: int | str = GiB
    label_size: int | str = 128 * KiB
    addr: int | None = None
    share: bool = True
    node: int | None = None
    slot: int | None = None

    def ensure_file(self) -> Path:
        """Create the backing file sparse if missing; refuse a size mismatch
        (resizing would move the label area, which sits at the end)."""
        p = Path(self.path)
        size = _parse_size(self.size)
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            with open(p, "wb") as fh:
                fh.truncate(size)
        elif p.stat().st_size != size:
            raise VmError(f"{p} is {p.stat().st_size} bytes, NvdimmSpec says {size}")
        return p


def _device_memory_base(mem: int) -> int:
    """Start of the pc machine's hotplug/NVDIMM window for ``mem`` bytes of RAM
    (QEMU 7.2 pc_memory_init: RAM above 3 GiB moves above 4 GiB)."""
    lowmem = 0xC0000000 if mem >= 0xE0000000 else mem
    return _align_up(4 * GiB + (mem - lowmem), GiB)


def tcg_thread_mode() -> str:
    """How TCG runs the guest's vCPUs: "single" unless TAGMEM_QEMU_TCG_THREAD says
    "multi". Why single: with one host thread per vCPU (multi), QEMU 7.2 lets a
    vCPU run a stale translation of kernel text that another vCPU has just
    re-patched (static keys, text_poke_bp), and the guest dies of
    "Oops: int3" in whatever it was doing; CI saw this in early boot. Round-robin
    TCG serialises the vCPUs, so cross-modified code is always seen whole."""
    mode = os.environ.get("TAGMEM_QEMU_TCG_THREAD", "single")
    if mode not in ("single", "multi"):
        raise VmError(f"TAGMEM_QEMU_TCG_THREAD={mode!r}: want single or multi")
    return mode


def qemu_argv(initrd: os.PathLike | str | None, nvdimms: Sequence[NvdimmSpec] = (), *,
              assets: Assets | None = None, mem: int | str = "1G", smp: int = 2,
              append: str = "", env: Mapping[str, str] | None = None,
              extra_args: Sequence[str] = (),
              machine_args: Sequence[str] | None = None,
              kernel: os.PathLike | str | None = None) -> list[str]:
    """The qemu-system-x86_64 command line for one guest.

    ``machine_args`` replace vmkit's own ``-machine pc -m <mem>`` when the
    caller lays out the guest's memory itself (the VM hand-off's NUMA nodes,
    tests/qemu/test_vm_handoff.py); no NVDIMMs then. ``kernel`` replaces
    vmkit's kernel (a disk image's own, tests/qemu/test_grub_guest.py).
    ``initrd`` None: no -kernel, -initrd or -append at all, the firmware
    (SeaBIOS) boots the guest's disk with its own bootloader; ``append`` and
    ``env`` must then be empty (they have no way into the guest)."""
    assets = _assets(assets)
    if initrd is None and (append or env or kernel):
        raise VmError("a firmware boot (no initrd) takes no kernel, append or env")
    mem_b = _parse_size(mem)
    # no_timer_check: on a loaded host the emulated CPU can miss the ticks the
    # kernel counts while it tests the IO-APIC timer route at boot, and it then
    # panics ("IO-APIC + timer doesn't work!"); seen under CI load. The check
    # guards against broken real chipsets, not QEMU's.
    cmdline = ["console=ttyS0", "quiet", "panic=-1", "no_timer_check", "rdinit=/init"]
    for k, v in (env or {}).items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) or re.search(r"\s", v):
            raise ValueError(f"guest env {k}={v!r}: name must be an identifier, value no spaces")
        cmdline.append(f"{k}={v}")  # unknown key=value params land in init's environment
    if append:
        cmdline.append(append)
    argv = [qemu_binary(), "-accel", f"tcg,thread={tcg_thread_mode()}", "-cpu", "max", "-smp", str(smp),
            "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
            "-serial", "stdio", "-no-reboot"]
    if initrd is not None:
        argv += ["-kernel", str(kernel or assets.kernel), "-initrd", str(initrd),
                 "-append", " ".join(cmdline)]
    if machine_args is not None:
        if nvdimms:
            raise VmError("machine_args and NVDIMMs do not mix")
        return argv + [*machine_args, *extra_args]
    if not nvdimms:
        return argv + ["-machine", "pc", "-m", f"{mem_b // MiB}M", *extra_args]
    base = _device_memory_base(mem_b)
    nxt = base
    span_end = base
    objs: list[str] = []
    for i, nv in enumerate(nvdimms):
        size = _parse_size(nv.size)
        addr = nv.addr if nv.addr is not None else nxt
        if addr % GiB or addr < base:
            raise VmError(f"NVDIMM {nv.path}: addr {addr:#x} must be 1 GiB aligned and >= {base:#x}")
        nxt = _align_up(addr + size, GiB)
        span_end = max(span_end, nxt)
        path = str(nv.ensure_file()).replace(",", ",,")
        objs += ["-object", f"memory-backend-file,id=nvmem{i},share={'on' if nv.share else 'off'},"
                            f"mem-path={path},size={size},align=2M",
                 "-device", f"nvdimm,id=nvdimm{i},memdev=nvmem{i},addr={addr:#x}"
                            + (f",label-size={_parse_size(nv.label_size)}"
                               if _parse_size(nv.label_size) else "")
                            + (f",node={nv.node}" if nv.node is not None else "")
                            + (f",slot={nv.slot}" if nv.slot is not None else "")]
    maxmem = mem_b + (span_end - base)
    return argv + ["-machine", "pc,nvdimm=on",
                   "-m", f"{mem_b // MiB}M,slots={len(nvdimms)},maxmem={maxmem // MiB}M",
                   *objs, *extra_args]


@dataclasses.dataclass
class BootResult:
    """What one guest did. ``verdict`` is PASS, FAIL, TIMEOUT or NO-VERDICT."""

    name: str
    argv: list[str]
    console: str
    elapsed_s: float
    verdict: str
    rc: int | None  # scenario exit status (FAIL rc=N), 0 on PASS
    timed_out: bool
    qemu_rc: int | None
    userland_s: float | None  # host seconds from start to /init running
    scenario_s: float | None  # host seconds the scenario itself took
    oops: str | None = None  # the first kernel BUG/Oops/panic report, if any

    @property
    def passed(self) -> bool:
        """The scenario passed and the guest kernel never oopsed."""
        return self.verdict == "PASS" and self.oops is None

    @property
    def oops_summary(self) -> str | None:
        """One line: the oops headline and the top frames of its call trace."""
        if not self.oops:
            return None
        lines = self.oops.splitlines()
        head = re.sub(r"^\[ *[\d.]+\] ", "", lines[0])
        frames = [re.sub(r"^\[ *[\d.]+\]\s+", "", ln) for ln in lines
                  if re.search(r"\]\s+[a-z_][\w.]*\+0x", ln) and " ? " not in ln]
        comm = re.search(r"Comm: (\S+)", self.oops)
        return (f"{head} in {comm.group(1) if comm else '?'}: "
                + " <- ".join(f.split("+")[0] for f in frames[:8]))

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.console.splitlines()[-n:])

    def summary(self) -> str:
        parts = [f"guest {self.name}: {self.verdict}"]
        if self.rc:
            parts.append(f"rc={self.rc}")
        parts.append(f"elapsed={self.elapsed_s:.1f}s")
        if self.userland_s is not None:
            parts.append(f"userland={self.userland_s:.1f}s")
        if self.scenario_s is not None:
            parts.append(f"scenario={self.scenario_s:.1f}s")
        if self.timed_out:
            parts.append("(killed at timeout)")
        if self.oops:
            parts.append(f"KERNEL OOPS: {self.oops_summary}")
        return " ".join(parts)

    def check(self) -> BootResult:
        """Raise VmError with the console tail (and any kernel oops) unless
        the scenario passed on a kernel that never oopsed."""
        if not self.passed:
            oops = f"\n--- kernel oops ---\n{self.oops}" if self.oops else ""
            raise VmError(f"{self.summary()}{oops}\n--- console tail ---\n{self.tail()}")
        return self

    def section(self, name: str) -> str:
        """Text a scenario printed with ``vmkit_section NAME cmd``."""
        m = re.search(rf"^VMKIT-BEGIN {re.escape(name)}\n(.*?)^VMKIT-END {re.escape(name)} rc=\d+$",
                      self.console, re.S | re.M)
        if not m:
            raise VmError(f"guest {self.name}: no section {name!r}\n{self.tail()}")
        return m.group(1)


class Guest:
    """A running guest. ``wait()`` returns its BootResult; ``wait_for()`` lets
    a test act in the middle of a scenario (start a peer, kill a daemon...)."""

    def __init__(self, argv: list[str], name: str, timeout_s: float,
                 log_path: os.PathLike | str | None = None, echo: bool | None = None,
                 log: Log = _default_log):
        self.argv, self.name, self.timeout_s = argv, name, timeout_s
        self._echo = bool(int(os.environ.get("VMKIT_ECHO", "0"))) if echo is None else echo
        self._log = log
        self._lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._eof = False
        self._logfh = open(log_path, "w") if log_path else None
        self._oops_at: int | None = None  # index into _lines
        self._oops_timer: threading.Timer | None = None
        self.t0 = time.monotonic()
        log(f"starting guest {name}")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"vmkit-{name}")
        self._reader.start()
        self._result: BootResult | None = None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        pending = b""
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            pending += chunk
            *done, pending = pending.split(b"\n")
            self._add_lines(done)
        self._add_lines([pending] if pending else [])
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _add_lines(self, raw: list[bytes]) -> None:
        now = time.monotonic() - self.t0
        lines = [r.decode("utf-8", "replace").replace("\r", "") for r in raw]
        with self._cond:
            for line in lines:
                if self._oops_at is None and OOPS_RE.search(line):
                    self._oops_at = len(self._lines)
                    self._oops_timer = threading.Timer(OOPS_GRACE_S, self.kill)
                    self._oops_timer.daemon = True
                    self._oops_timer.start()
                self._lines.append((now, line))
            self._cond.notify_all()
        for line in lines:
            if self._logfh:
                self._logfh.write(f"{now:8.3f} {line}\n")
                self._logfh.flush()
            if self._echo:
                print(f"[{self.name} {now:6.1f}] {line}", file=sys.stderr, flush=True)

    def wait_for(self, pattern: str, timeout_s: float = 60.0) -> re.Match:
        """Block until a console line matches ``pattern`` (regex)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        seen = 0
        with self._cond:
            while True:
                for _, line in self._lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(self._lines)
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    tail = "\n".join(line for _, line in self._lines[-30:])
                    raise VmError(f"guest {self.name}: no line matching {pattern!r}\n{tail}")
                self._cond.wait(left)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def wait(self) -> BootResult:
        if self._result:
            return self._result
        timed_out = False
        try:
            self.proc.wait(timeout=max(0.0, self.t0 + self.timeout_s - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            self.proc.kill()
            self.proc.wait()
        elapsed = time.monotonic() - self.t0
        if self._oops_timer:
            self._oops_timer.cancel()
        self._reader.join(10)
        if self._logfh:
            self._logfh.close()
        console = "\n".join(line for _, line in self._lines)
        verdict, rc = "NO-VERDICT", None
        t_init = t_scen = t_end = None
        for t, line in self._lines:
            if STAGE_INIT in line and t_init is None:
                t_init = t
            elif STAGE_SCENARIO in line and t_scen is None:
                t_scen = t
            m = VERDICT_RE.search(line)
            if m:
                t_end = t
                verdict, rc = ("PASS", 0) if m.group(1) == "PASS" else ("FAIL", int(m.group(2)))
        if timed_out:
            verdict = "TIMEOUT"
        oops = None
        if self._oops_at is not None:
            block = []
            for _, line in self._lines[self._oops_at:self._oops_at + 120]:
                block.append(line)
                if "---[ end trace" in line or "end Kernel panic" in line:
                    break
            oops = "\n".join(block)
        self._result = BootResult(
            self.name, self.argv, console, elapsed, verdict, rc, timed_out,
            None if timed_out else self.proc.returncode, t_init,
            (t_end - t_scen) if t_end is not None and t_scen is not None else None, oops)
        self._log(self._result.summary())
        if timed_out:
            self._log(f"guest {self.name} killed after {self.timeout_s:.0f}s; console tail:\n"
                      + self._result.tail(25))
        return self._result

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()
        self.wait()


_guest_counter = 0


def start(initrd: os.PathLike | str | None, nvdimms: Sequence[NvdimmSpec] = (),
          timeout_s: float = 300, mem: int | str = "1G", smp: int = 2,
          extra_args: Sequence[str] = (), *,
          append: str = "", env: Mapping[str, str] | None = None, name: str | None = None,
          log_path: os.PathLike | str | None = None, echo: bool | None = None,
          assets: Assets | None = None, log: Log = _default_log,
          machine_args: Sequence[str] | None = None,
          kernel: os.PathLike | str | None = None) -> Guest:
    """Start a guest without waiting (for several guests on one backing file).

    ``env`` becomes environment variables of /init and the scenario (passed on
    the kernel command line, so one initrd can serve several roles).
    ``extra_args`` go to QEMU, ``append`` to the kernel command line;
    ``kernel`` and ``initrd`` None: see :func:`qemu_argv`.
    """
    global _guest_counter
    _guest_counter += 1
    argv = qemu_argv(initrd, nvdimms, assets=assets, mem=mem, smp=smp, append=append, env=env,
                     extra_args=extra_args, machine_args=machine_args, kernel=kernel)
    return Guest(argv, name or f"vm{_guest_counter}", timeout_s, log_path, echo, log)


def boot(initrd: os.PathLike | str, nvdimms: Sequence[NvdimmSpec] = (), timeout_s: float = 300,
         mem: int | str = "1G", smp: int = 2, extra_args: Sequence[str] = (),
         **kw) -> BootResult:
    """Boot one guest to its verdict (or the timeout) and return the result."""
    return start(initrd, nvdimms, timeout_s, mem, smp, extra_args, **kw).wait()


def boot_many(configs: Sequence[Mapping]) -> list[BootResult]:
    """Start every guest (``configs`` are keyword dicts for :func:`start`),
    then wait for all of them; all run concurrently."""
    guests = [start(**cfg) for cfg in configs]
    try:
        return [g.wait() for g in guests]
    finally:
        for g in guests:
            g.kill()


# --------------------------------------------------------------------------
# labels: tagged devdax namespaces, once per backing file
# --------------------------------------------------------------------------


def label_snippet(tags: Sequence[str], ns_size: int | str = 256 * MiB, align: int | str = 2 * MiB,
                  region: str = "region0", nmem: str = "nmem0") -> str:
    """Scenario text that wipes the label area and creates one devdax
    namespace per tag, then checks each tag resolves to a dax device."""
    lines = [f"vmkit_init_labels {region} {nmem}"]
    for tag in tags:
        tag = str(uuidlib.UUID(str(tag)))
        lines.append(f"vmkit_create_devdax {tag} {_parse_size(ns_size)} {_parse_size(align)} {region}")
    lines.append("vmkit_settle")
    for tag in tags:
        lines.append(f"vmkit_log \"tag {uuidlib.UUID(str(tag))} -> $(vmkit_dax_for_tag {uuidlib.UUID(str(tag))})\"")
    return "\n".join(lines) + "\n"


def _stamp_path(spec: NvdimmSpec) -> Path:
    return Path(f"{spec.path}.vmkit-labels.json")


def labels_on_media(spec: NvdimmSpec, tags: Sequence[str]) -> bool:
    """Whether every tag's 16 bytes sit in the label area, which QEMU keeps
    in the last ``label_size`` bytes of the backing file."""
    p = Path(spec.path)
    lsize = _parse_size(spec.label_size)
    if not p.is_file() or p.stat().st_size < lsize:
        return False
    with open(p, "rb") as fh:
        fh.seek(-lsize, os.SEEK_END)
        area = fh.read(lsize)
    return all(uuidlib.UUID(str(t)).bytes in area for t in tags)


def prepare_nvdimm(spec: NvdimmSpec, tags: Sequence[str], ns_size: int | str = 256 * MiB,
                   align: int | str = 2 * MiB, *, timeout_s: float = 300,
                   assets: Assets | None = None, log: Log = _default_log) -> BootResult | None:
    """Give ``spec``'s backing file one devdax namespace per tag, once.

    A stamp next to the image records the (tags, sizes) it was prepared for;
    with a matching stamp and the tags present in the label area nothing
    boots and None is returned. Otherwise a "prepare" guest (this NVDIMM only,
    so it is region0/nmem0) rewrites the labels and its result is returned.
    """
    assets = _assets(assets)
    tags = [str(uuidlib.UUID(str(t))) for t in tags]
    key = {"tags": tags, "ns_size": _parse_size(ns_size), "align": _parse_size(align),
           "size": _parse_size(spec.size), "label_size": _parse_size(spec.label_size),
           "map": "mem"}
    stamp = _stamp_path(spec)
    with _locked(Path(f"{spec.path}.lock")):
        spec.ensure_file()
        if stamp.is_file() and json.loads(stamp.read_text()) == key and labels_on_media(spec, tags):
            log(f"{spec.path}: labels for {len(tags)} tag(s) already prepared (stamp hit)")
            return None
        stamp.unlink(missing_ok=True)
        initrd = assets.cache_dir / "initramfs" / f"prepare-{os.getpid()}.cpio"
        build_initramfs(initrd, scenario=label_snippet(tags, ns_size, align), assets=assets, log=log)
        one = dataclasses.replace(spec, addr=None, node=None, slot=None)
        try:
            res = boot(initrd, [one], timeout_s=timeout_s, name=f"prepare-{Path(spec.path).name}",
                       assets=assets, log=log)
        finally:
            initrd.unlink(missing_ok=True)
        res.check()
        if not labels_on_media(spec, tags):
            raise VmError(f"{spec.path}: prepare boot passed but tags are not in the label area")
        stamp.write_text(json.dumps(key, indent=2) + "\n")
        return res


#: Where the kernel writes a dax info block ("NVDIMM_DAX_INFO") in a namespace
#: converted to devdax: 4 KiB into it (the label-less namespace starts at
#: offset 0 of the backing file).
DAX_INFOBLOCK_OFFSET = 4 * KiB
DAX_SIGNATURE = b"NVDIMM_DAX_INFO\0"


def labelless_devdax_on_media(spec: NvdimmSpec) -> bool:
    """Whether a label-less backing file carries a dax info block."""
    p = Path(spec.path)
    if not p.is_file() or p.stat().st_size < DAX_INFOBLOCK_OFFSET + len(DAX_SIGNATURE):
        return False
    with open(p, "rb") as fh:
        fh.seek(DAX_INFOBLOCK_OFFSET)
        return fh.read(len(DAX_SIGNATURE)) == DAX_SIGNATURE


def prepare_labelless_devdax(spec: NvdimmSpec, align: int | str = 2 * MiB, *,
                             timeout_s: float = 300, assets: Assets | None = None,
                             log: Log = _default_log) -> BootResult | None:
    """Turn a label-less NVDIMM's "io" namespace into devdax, once.

    Such a namespace has no UUID, so its dax device carries no tag: only a
    tagmem.conf section (match-range / match-node) can name it. The dax info
    block lands on the media, so later boots find the device in devdax mode
    without running ndctl again. Returns None when the file already has it.
    """
    assets = _assets(assets)
    if _parse_size(spec.label_size):
        raise VmError(f"{spec.path}: prepare_labelless_devdax needs label_size=0")
    key = {"labelless_devdax": True, "align": _parse_size(align), "size": _parse_size(spec.size),
           "map": "mem"}
    stamp = _stamp_path(spec)
    with _locked(Path(f"{spec.path}.lock")):
        spec.ensure_file()
        if stamp.is_file() and json.loads(stamp.read_text()) == key \
                and labelless_devdax_on_media(spec):
            log(f"{spec.path}: label-less devdax already prepared (stamp hit)")
            return None
        stamp.unlink(missing_ok=True)
        initrd = assets.cache_dir / "initramfs" / f"prepare-ll-{os.getpid()}.cpio"
        scenario = (f"vmkit_section before ndctl list -N\n"
                    f"ndctl create-namespace -f -e namespace0.0 -m devdax -M mem -a {_parse_size(align)}\n"
                    f"vmkit_settle\n"
                    f"vmkit_section after daxctl list\n"
                    f"test -c /dev/dax0.0\n")
        build_initramfs(initrd, scenario=scenario, assets=assets, log=log)
        one = dataclasses.replace(spec, addr=None, node=None, slot=None)
        try:
            res = boot(initrd, [one], timeout_s=timeout_s,
                       name=f"prepare-{Path(spec.path).name}", assets=assets, log=log)
        finally:
            initrd.unlink(missing_ok=True)
        res.check()
        if not labelless_devdax_on_media(spec):
            raise VmError(f"{spec.path}: devdax conversion passed but no dax info block at "
                          f"{DAX_INFOBLOCK_OFFSET:#x}")
        stamp.write_text(json.dumps(key, indent=2) + "\n")
        return res


def numa_args(mem: int | str = "1G", nodes: int = 2, smp: int = 2) -> list[str]:
    """QEMU options for ``nodes`` NUMA nodes splitting ``mem`` evenly; every
    CPU sits on node 0 and the others are memory-only (CPUs sharing a cache
    on two nodes make the kernel WARN). NVDIMMs then name a node with
    ``NvdimmSpec.node``."""
    mem_b = _parse_size(mem)
    if mem_b % (nodes * 2 * MiB):
        raise VmError(f"memory {mem_b} does not split into {nodes} nodes")
    args: list[str] = []
    for n in range(nodes):
        args += ["-object", f"memory-backend-ram,id=numaram{n},size={mem_b // nodes // MiB}M"]
        numa = f"node,nodeid={n},memdev=numaram{n}"
        if n == 0:
            numa += f",cpus=0-{smp - 1}"
        args += ["-numa", numa]
    return args

# --------------------------------------------------------------------------
# the daxmap pattern, host side
# --------------------------------------------------------------------------

_M64 = (1 << 64) - 1


def daxmap_pattern(seed: int, nbytes: int, start_word: int = 0) -> bytes:
    """Bytes daxmap writes: little-endian 64-bit words, word i being
    splitmix64 output number i+1 from state ``seed`` (mirror of daxmap.cpp)."""
    words = []
    for i in range(start_word, start_word + (nbytes + 7) // 8):
        z = (seed + (i + 1) * 0x9E3779B97F4A7C15) & _M64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        words.append(z ^ (z >> 31))
    return struct.pack(f"<{len(words)}Q", *words)[:nbytes]


def find_pattern(path: os.PathLike | str, seed: int, probe: int = 4096,
                 step: int = 4096) -> int | None:
    """Offset in a host file (the NVDIMM backing image) where the daxmap
    pattern for ``seed`` starts, or None. Scans page-aligned offsets only."""
    needle = daxmap_pattern(seed, probe)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ) as mm:
        pos = mm.find(needle)
        while pos != -1 and pos % step:
            pos = mm.find(needle, pos + 1)
        return None if pos == -1 else pos


# --------------------------------------------------------------------------
# command line, for trying scenarios by hand
# --------------------------------------------------------------------------


def _main(argv: Sequence[str]) -> int:
    import argparse
    ap = argparse.ArgumentParser(description="vmkit: real devdax guests under QEMU")
    ap.add_argument("--cache", default=None, help="cache dir (default: %(default)s -> "
                    f"{default_cache_dir()})")
    ap.add_argument("--kernel", default=None, choices=sorted(KERNELS),
                    help="kernel flavor (default: $TAGMEM_QEMU_KERNEL, else 6.12)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("assets", help="fetch/unpack the kernel and modules")
    pr = sub.add_parser("prepare", help="create tagged devdax namespaces on a backing file")
    pr.add_argument("image")
    pr.add_argument("tags", nargs="+")
    pr.add_argument("--size", default="1G")
    pr.add_argument("--ns-size", default="256M")
    rn = sub.add_parser("run", help="boot a scenario script")
    rn.add_argument("scenario", help="shell script file run inside the guest")
    rn.add_argument("--nvdimm", action="append", default=[], help="PATH[:SIZE]")
    rn.add_argument("--bin", action="append", default=[], help="host binary to include")
    rn.add_argument("--file", action="append", default=[], help="GUEST=HOSTPATH")
    rn.add_argument("--env", action="append", default=[], help="KEY=VALUE for the guest")
    rn.add_argument("--timeout", type=float, default=300)
    rn.add_argument("--smp", type=int, default=2)
    args = ap.parse_args(argv)
    assets = ensure_assets(args.cache, kernel=args.kernel)
    if args.cmd == "assets":
        print(json.dumps({"flavor": assets.flavor, "package": assets.package, "kver": assets.kver,
                          "kernel": str(assets.kernel), "downloaded": assets.downloaded,
                          "modules": [m.name for m in assets.modules],
                          "timings": assets.timings}, indent=2))
        return 0
    if args.cmd == "prepare":
        prepare_nvdimm(NvdimmSpec(args.image, args.size), args.tags, args.ns_size, assets=assets)
        return 0
    nvs = []
    for spec in args.nvdimm:
        path, _, size = spec.partition(":")
        nvs.append(NvdimmSpec(path, size or GiB))
    files = dict(f.split("=", 1) for f in args.file)
    env = dict(e.split("=", 1) for e in args.env)
    with tempfile.TemporaryDirectory() as tmp:
        initrd = build_initramfs(Path(tmp) / "initrd.cpio", args.bin, files,
                                 Path(args.scenario).read_text(), assets=assets)
        res = boot(initrd, nvs, args.timeout, smp=args.smp, env=env, assets=assets, echo=True)
    return 0 if res.passed else 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
