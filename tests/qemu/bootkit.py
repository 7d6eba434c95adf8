# SPDX-License-Identifier: Apache-2.0
"""bootkit: a real Debian 12 system, booted under QEMU, with tagmem's package.

Why this exists: vmkit's guests are a busybox initramfs that starts tagmemfs
by hand. What an administrator runs is different: a Debian system booted by
systemd, with udevd delivering device events, and tagmem installed from its
.deb, its service enabled and started by the package's maintainer scripts.
This module builds that system from Debian's own packages and boots it on
vmkit's kernel and NVDIMMs:

* :func:`build_deb` - ``dpkg-buildpackage -b`` of the source tree, in a copy
  under the cache directory (never in the tree), cached by the tree's content.
* :func:`rootfs_tarball` - ``mmdebstrap`` of Debian 12 with systemd, udev and
  the given packages, cached by that package list.
* :func:`disk_image` - the tarball plus the kernel's modules and the test's
  files, as an ext4 image (``mke2fs -d``); or, for an image with its own
  kernel and GRUB (test_grub_guest.py), as partition 1 of an MBR disk.
* :func:`boot_initramfs` - a tiny busybox initramfs that loads virtio_blk and
  ext4, mounts the disk and hands over to systemd.
* :func:`start` - boots it with vmkit (``root=/dev/vda``), NVDIMMs included;
  or with the disk's own kernel; or through the firmware and the disk's own
  bootloader (no -kernel at all).

Guest programs report on the serial console with vmkit's markers
(``TAGMEM-STAGE:``, ``VMKIT-BEGIN``/``VMKIT-END``, ``TAGMEM-VERDICT:``), so
vmkit's BootResult reads them. Only the Python standard library is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Mapping, Sequence

import vmkit

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

#: The Debian release the guest runs: the one the project supports.
SUITE = "bookworm"
#: Always in the guest, whatever the package needs: an init, udevd, kmod
#: (on every Debian system; udevd loads the NVDIMM drivers), and the tools
#: an administrator (and the test) uses to make namespaces.
BASE_PACKAGES = ("systemd", "systemd-sysv", "udev", "kmod", "ndctl", "daxctl")

#: Modules the initramfs loads to reach the root filesystem (virtio_pci and
#: FUSE are built into Debian's kernel), and the ones the booted system's
#: udevd loads for the emulated NVDIMM; their dependencies come along.
#: ext4 asks the crypto API for crc32c at mount time, so no modinfo
#: dependency names the module that provides it.
ROOT_MODULES = ("crc32c_generic", "virtio_blk", "ext4")
SYSTEM_MODULES = ROOT_MODULES + vmkit.AUTOLOAD_MODULES + vmkit.EXTRA_MODULES

#: Bump when the disk layout or the initramfs changes meaning.
_BOOTKIT_ABI = 1

Log = vmkit.Log
_log = vmkit._default_log


def _sha(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------
# the package
# --------------------------------------------------------------------------


def source_files(root: Path = REPO) -> list[str]:
    """The tree's files (tracked and new, not ignored) relative to ``root``:
    what a clean checkout would hold, so build output never enters the key.
    Without tests/: the package build does not use it (BUILD_TESTING=OFF), and
    editing a test must not rebuild the package."""
    if (root / ".git").exists() and shutil.which("git"):
        cp = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "-co", "--exclude-standard"],
                            capture_output=True, check=True)
        names = [n for n in cp.stdout.decode().split("\0") if n and not n.startswith("tests/")]
        return sorted(n for n in names if (root / n).is_file() or (root / n).is_symlink())
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        dirnames[:] = [d for d in dirnames if not (rel == "." and (d.startswith("build") or
                                                                   d.startswith(".") or
                                                                   d == "tests"))
                       and d != "__pycache__"]
        out += [os.path.normpath(os.path.join(rel, f)) for f in filenames if not f.endswith(".pyc")]
    return sorted(out)


def tree_key(root: Path = REPO) -> str:
    h = hashlib.sha256()
    for name in source_files(root):
        p = root / name
        h.update(name.encode() + b"\0")
        if p.is_symlink():
            h.update(b"L" + os.readlink(p).encode())
        else:
            h.update(oct(p.stat().st_mode & 0o111).encode() + p.read_bytes())
    return h.hexdigest()[:16]


def build_deb(cache_dir: Path, root: Path = REPO, log: Log = _log) -> tuple[Path, dict]:
    """The tagmem .deb built from ``root``; returns (deb, info). info holds
    the lintian output and the build's time. Built once per tree content.

    Why a copy: dpkg-buildpackage builds inside the source tree and writes
    the .deb next to it; the tests must never write into the source tree. The
    copy sits at a fixed path so a ccache (used when installed) hits across
    builds."""
    key = tree_key(root)
    out = cache_dir / "deb" / key
    info_path = out / "info.json"
    with vmkit._locked(cache_dir / "deb" / ".lock"):
        if info_path.is_file():
            info = json.loads(info_path.read_text())
            log(f"tagmem package: cache hit {out}")
            return out / info["deb"], dict(info, cached=True)
        work = cache_dir / "deb" / "work"
        shutil.rmtree(work, ignore_errors=True)
        src = work / "tagmem"
        src.mkdir(parents=True)
        for name in source_files(root):
            dst = src / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, dst, follow_symlinks=False)
        env = dict(os.environ, DEB_BUILD_OPTIONS=f"parallel={os.cpu_count() or 1}",
                   LC_ALL="C.UTF-8")
        if Path("/usr/lib/ccache/c++").exists():
            env["PATH"] = "/usr/lib/ccache:" + env.get("PATH", "/usr/bin:/bin")
            env.setdefault("CCACHE_BASEDIR", str(src))
        t0 = time.monotonic()
        log(f"dpkg-buildpackage -b in {src}")
        vmkit._run(["dpkg-buildpackage", "-b", "-uc", "-us"], cwd=src, env=env)
        build_s = time.monotonic() - t0
        debs = sorted(work.glob("tagmem_*.deb"))
        changes = sorted(work.glob("tagmem_*.changes"))
        if len(debs) != 1 or len(changes) != 1:
            raise vmkit.VmError(f"dpkg-buildpackage left {debs} {changes} in {work}")
        t0 = time.monotonic()
        # lintian's exit status says whether anything at warning level or
        # above was found; the full list (info and pedantic too) is kept.
        lint = subprocess.run(["lintian", "--fail-on", "error,warning", "--display-info",
                               "--pedantic", str(changes[0])], capture_output=True, text=True,
                              env=env)
        lintian_s = time.monotonic() - t0
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        shutil.copy2(debs[0], tmp / debs[0].name)
        info = {"deb": debs[0].name, "build_s": round(build_s, 1),
                "lintian_s": round(lintian_s, 1), "lintian_rc": lint.returncode,
                "lintian": lint.stdout + lint.stderr,
                "contents": vmkit._run(["dpkg-deb", "-c", debs[0]]).stdout,
                "depends": vmkit._run(["dpkg-deb", "-f", debs[0], "Depends"]).stdout.strip()}
        (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        shutil.rmtree(work, ignore_errors=True)
        for old in out.parent.iterdir():  # one package kept: the tree's latest
            if old != out and re.fullmatch(r"[0-9a-f]{16}", old.name):
                shutil.rmtree(old, ignore_errors=True)
        log(f"tagmem package {info['deb']} built in {build_s:.0f}s, lintian rc "
            f"{lint.returncode} in {lintian_s:.0f}s")
        return out / info["deb"], dict(info, cached=False)


def runtime_packages(deb: Path) -> list[str]:
    """The package names of the .deb's Depends (first alternative each):
    the guest gets exactly these, so a missing dependency fails the install."""
    deps = vmkit._run(["dpkg-deb", "-f", deb, "Depends"]).stdout
    names = []
    for item in deps.split(","):
        first = item.split("|")[0].strip()
        name = re.split(r"[\s(:]", first, maxsplit=1)[0]
        if name:
            names.append(name)
    return names


# --------------------------------------------------------------------------
# the root filesystem
# --------------------------------------------------------------------------


def rootfs_tarball(packages: Sequence[str], cache_dir: Path, log: Log = _log, *,
                   flavor: str = "") -> tuple[Path, dict]:
    """A Debian ``SUITE`` root filesystem (minbase plus ``packages``) as a
    tarball made by mmdebstrap, cached by the package list; (path, info).
    One tarball is kept per ``flavor`` (a short name: the tests that need
    different package lists do not evict each other's)."""
    pkgs = sorted(set(packages))
    key = _sha(SUITE, "minbase", pkgs, _BOOTKIT_ABI)
    if flavor and not re.fullmatch(r"[a-z][a-z0-9]*", flavor):
        raise ValueError(f"rootfs flavor {flavor!r}: lower-case letters and digits")
    prefix = f"{SUITE}-{flavor}-" if flavor else f"{SUITE}-"
    tar = cache_dir / "rootfs" / f"{prefix}{key}.tar"
    with vmkit._locked(cache_dir / "rootfs" / ".lock"):
        if tar.is_file():
            log(f"rootfs: cache hit {tar}")
            return tar, {"cached": True, "packages": pkgs}
        if not shutil.which("mmdebstrap"):
            raise vmkit.VmError("mmdebstrap is not installed (scripts/install-deps.sh)")
        tmp = tar.with_name(f".{os.getpid()}.{tar.name}")
        t0 = time.monotonic()
        argv = ["mmdebstrap", "--variant=minbase", "--format=tar", "--include=" + ",".join(pkgs),
                SUITE, str(tmp)]
        try:
            vmkit._run(argv, log)
        except vmkit.VmError:
            tmp.unlink(missing_ok=True)
            raise
        for old in tar.parent.glob(f"{prefix}*.tar"):  # one rootfs kept per flavor
            if re.fullmatch(re.escape(prefix) + r"[0-9a-f]{16}\.tar", old.name):
                old.unlink()
        tmp.rename(tar)
        took = time.monotonic() - t0
        log(f"rootfs {tar.name}: {tar.stat().st_size / vmkit.MiB:.0f} MiB in {took:.0f}s")
        return tar, {"cached": False, "build_s": round(took, 1), "packages": pkgs}


# --------------------------------------------------------------------------
# kernel modules
# --------------------------------------------------------------------------


def kernel_modules(assets: vmkit.Assets, names: Sequence[str] = SYSTEM_MODULES,
                   log: Log = _log) -> tuple[Path, list[str]]:
    """A ``lib/modules/<kver>`` tree (decompressed, depmod'ed) holding
    ``names`` and their dependencies, from vmkit's kernel .deb; cached.
    Returns (tree root, module file paths in load order)."""
    key = _sha(assets.package, sorted(names))
    root = assets.cache_dir / "bootkit" / f"modules-{key}"
    manifest = root / "order.json"
    if manifest.is_file():
        return root, json.loads(manifest.read_text())
    debs = sorted((assets.cache_dir / "debs").glob(f"{assets.package}_*.deb"))
    if not debs:
        vmkit._run(["apt-get", *vmkit._APT_OPTS, "download", assets.package], log,
                   cwd=assets.cache_dir / "debs")
        debs = sorted((assets.cache_dir / "debs").glob(f"{assets.package}_*.deb"))
    with tempfile.TemporaryDirectory(dir=assets.cache_dir) as tmp:
        unpack = Path(tmp) / "x"
        vmkit._run(["dpkg-deb", "-x", debs[-1], unpack])
        src = unpack / "lib/modules" / assets.kver
        index = vmkit._module_index(src / "kernel")

        def deps(name: str) -> list[str]:
            if name not in index:
                raise vmkit.VmError(f"module {name} not in {debs[-1].name}")
            out = vmkit._run(["modinfo", "-F", "depends", index[name]]).stdout.strip()
            return [d.replace("-", "_") for d in out.split(",") if d]

        order = vmkit._sort_modules(names, deps)
        stage = Path(tmp) / "out"
        dst = stage / "lib/modules" / assets.kver
        files = []
        for name in order:
            rel = index[name].relative_to(src)
            rel_ko = Path(str(rel).split(".ko")[0] + ".ko")
            vmkit._decompress_module(index[name], dst / rel_ko)
            files.append(f"/lib/modules/{assets.kver}/{rel_ko}")
        for meta in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
            if (src / meta).exists():
                shutil.copyfile(src / meta, dst / meta)
        vmkit._run(["depmod", "-b", stage, assets.kver])
        (stage / "order.json").write_text(json.dumps(files) + "\n")
        shutil.rmtree(root, ignore_errors=True)
        root.parent.mkdir(parents=True, exist_ok=True)
        stage.rename(root)
    log(f"kernel modules for the booted system: {', '.join(order)}")
    return root, files


# --------------------------------------------------------------------------
# initramfs and disk
# --------------------------------------------------------------------------

BOOT_INIT = r"""#!/bin/sh
# bootkit /init (generated; see tests/qemu/bootkit.py): reach the root disk,
# then hand over to systemd as PID 1.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "TAGMEM-STAGE: init uptime=$(cut -d' ' -f1 /proc/uptime)"
for m in @MODULES@; do
    insmod "$m" || echo "bootkit: insmod $m failed"
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
mkdir -p /newroot
if ! mount -t ext4 -o rw /dev/vda /newroot; then
    echo "TAGMEM-VERDICT: FAIL rc=97"
    echo "bootkit: cannot mount the root disk"; poweroff -f
fi
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /lib/systemd/systemd
"""


def boot_initramfs(assets: vmkit.Assets, log: Log = _log) -> Path:
    """busybox, the root disk's modules and /init; cached by content."""
    modroot, files = kernel_modules(assets, ROOT_MODULES, log)
    t = vmkit.Tree()
    for top in ("/bin", "/sbin", "/lib", "/lib64"):
        if os.path.islink(top):  # merged /usr, as on the host
            t.symlink(top, os.readlink(top))
    for d in ("/proc", "/sys", "/dev", "/newroot", "/usr/bin", "/usr/sbin"):
        t.mkdir(d)
    t.chardev("/dev/console", 5, 1)
    bb = t.mirror_host_path("/bin/busybox")
    for applet in vmkit._run([bb if os.path.exists(bb) else "/bin/busybox",
                              "--list-full"]).stdout.split():
        if not t.exists("/" + applet):
            t.symlink("/" + applet, "/bin/busybox")
    for f in files:
        t.add_host_file(f, modroot / f.lstrip("/"), 0o644)
    t.add_bytes("/init", BOOT_INIT.replace("@MODULES@", " ".join(files)), 0o755)
    out = assets.cache_dir / "bootkit" / f"initrd-{t.fingerprint()[:16]}.cpio"
    if not out.is_file():
        tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            t.write_cpio(fh)
        tmp.rename(out)
    return out


#: Where the root filesystem starts on a partitioned disk: the usual 1 MiB,
#: whose gap after the MBR is where grub-install embeds GRUB's core image.
PARTITION_START = 1 * vmkit.MiB


def disk_image(out: Path, tarball: Path, assets: vmkit.Assets,
               files: Mapping[str, object], *, size: str = "2G",
               symlinks: Mapping[str, str] | None = None, log: Log = _log,
               vmkit_modules: bool = True, partitioned: bool = False,
               fs_uuid: str | None = None) -> float:
    """Write the guest's root disk: ``tarball`` unpacked, the booted system's
    kernel modules (vmkit's kernel's; not with ``vmkit_modules=False``, for
    an image that has its own kernel), ``files`` ({guest path: bytes or host
    path}; host mode, or 0644 for bytes; a guest path ending in ``@755``
    sets 0755) and ``symlinks`` ({guest path: target}); then ``mke2fs -d``
    (``fs_uuid``: the filesystem's UUID). ``partitioned``: the filesystem
    (``size``) is partition 1 of an MBR disk, from PARTITION_START to the
    end, marked bootable, as a distribution image has it (sfdisk on the
    file; no loop device). Returns seconds."""
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".rootfs-") as tmp:
        root = Path(tmp)
        vmkit._run(["tar", "-C", root, "--numeric-owner", "-xpf", tarball])
        if vmkit_modules:
            modroot, _ = kernel_modules(assets, SYSTEM_MODULES, log)
            shutil.copytree(modroot / "lib", root / "usr/lib", dirs_exist_ok=True)
        for guest, spec in files.items():
            mode = None
            if guest.endswith("@755"):
                guest, mode = guest[:-4], 0o755
            dst = root / guest.lstrip("/")
            dst.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(spec, bytes):
                dst.write_bytes(spec)
                os.chmod(dst, mode or 0o644)
            else:
                shutil.copy2(spec, dst)
                if mode:
                    os.chmod(dst, mode)
        for guest, target in (symlinks or {}).items():
            dst = root / guest.lstrip("/")
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_symlink() or dst.exists():
                dst.unlink()
            dst.symlink_to(target)
        out.unlink(missing_ok=True)
        ext = "root_owner=0:0" + (f",offset={PARTITION_START}" if partitioned else "")
        vmkit._run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "tagmem-root", "-E", ext,
                    *(["-U", fs_uuid] if fs_uuid else []), "-d", root, out, size])
        if partitioned:
            if not shutil.which("sfdisk"):
                raise vmkit.VmError("sfdisk is not installed (fdisk; scripts/install-deps.sh)")
            vmkit._run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", out],
                       input=f"label: dos\nstart={PARTITION_START // 512}, type=83, bootable\n")
    took = time.monotonic() - t0
    log(f"disk {out.name}: {took:.1f}s")
    return took


# --------------------------------------------------------------------------
# booting
# --------------------------------------------------------------------------


#: The booted guest's RAM (node 0 when a hand-off adds NUMA nodes).
GUEST_MEM = "1G"


def start(initrd: Path | None, disk: Path, nvdimms: Sequence[vmkit.NvdimmSpec] = (), *,
          timeout_s: float = 600, stage: str = "", name: str | None = None,
          assets: vmkit.Assets | None = None, log: Log = _log,
          log_path: os.PathLike | str | None = None, extra_args: Sequence[str] = (),
          append: str = "", kernel: Path | None = None, root: str = "/dev/vda") -> vmkit.Guest:
    """Boot the disk under systemd. ``stage`` reaches the guest as
    ``tagmem.stage=`` on the kernel command line. ``extra_args`` follow
    vmkit's ``-machine``/``-m`` (QEMU merges a later ``-machine`` or ``-m``
    into the earlier one: e.g. `tagmem vm-args` output); ``append`` is added
    to the kernel command line. ``kernel`` (with ``initrd``, e.g. the disk's
    own): instead of vmkit's; ``root``: the root device for it.
    ``initrd`` None: SeaBIOS boots the disk's own bootloader, and the kernel
    command line is the disk's business (no ``stage`` or ``append``)."""
    extra = ["-drive", f"file={disk},if=virtio,format=raw,cache=unsafe", *extra_args]
    if initrd is None:
        if stage or append or kernel:
            raise vmkit.VmError("a disk that boots itself takes no stage, append or kernel")
        return vmkit.start(None, nvdimms, timeout_s, mem=GUEST_MEM, extra_args=extra,
                           name=name, assets=assets, log=log, log_path=log_path)
    cmdline = (f"root={root} rw systemd.firstboot=off systemd.show_status=error "
               "udev.log_level=err")
    if stage:
        cmdline += f" tagmem.stage={stage}"
    if append:
        cmdline += f" {append}"
    return vmkit.start(initrd, nvdimms, timeout_s, mem=GUEST_MEM, extra_args=extra,
                       append=cmdline, name=name, assets=assets, log=log, log_path=log_path,
                       kernel=kernel)
