# SPDX-License-Identifier: Apache-2.0
"""Issue 12: a guest that boots its own kernel through its own GRUB
(CTest qemu_grub_guest).

Why: `tagmem vm-args` hands a tag to a guest as a NUMA node that the guest
kernel's `memmap=` makes soft reserved. A distribution image booted by its
own bootloader takes its kernel command line from its own configuration:
the host cannot add `memmap=`, the guest administrator must (docs/vm.md,
"Guests that boot their own kernel"). Every other hand-off test passes
`memmap=` with QEMU's -append; this one boots what a user really runs:

* the image: Debian 12 from Debian's packages (bootkit: mmdebstrap, cached by
  its package list) with its own kernel (linux-image-amd64), Debian's
  initramfs (initramfs-tools) and grub-pc, on partition 1 of an MBR disk
  image (sfdisk on the file, mke2fs at 1 MiB: no loop device), the way an
  image builder configures GRUB for a serial console
  (/etc/default/grub.d/10-serial-console.cfg);
* boot 1, "prepare" (the image builder's last step): the image's own
  vmlinuz and initrd.img (the only boot with -kernel/-initrd/-append, which
  a builder's chroot would not need), `apt install ./tagmem_*.deb`,
  `grub-install /dev/vda`, `update-grub`;
* boot 2, "without": SeaBIOS -> GRUB from the disk -> Debian's kernel and
  initramfs, no -kernel/-initrd/-append, with the real `tagmem vm-args`
  arguments but a throwaway file as the tag's memory. The guest has not
  got `memmap=`: the tag's range is ordinary RAM of node 1 and the guest's
  tagmem lists the fw_cfg entry as rejected ("no dax device"). Then the
  guest administrator's step, exactly the command docs/vm.md gives (read
  from docs/vm.md by this test) with the line the host's
  `tagmem vm-args --kernel-cmdline` printed: /etc/default/grub.d/tagmem.cfg
  and `update-grub`; grub.cfg's every `linux` line then carries it;
* boot 3, "measured": the same firmware boot with the checked backing file
  (vm-args' one test switch, tagmemvm.with_backing_file). /proc/cmdline has
  the admin's `memmap=` from GRUB; the package's tagmemfs.service (modules
  from its modules-load.d) lists the tag with the host's size, shareable
  flag, name and performance data; the host's pattern is read at an odd
  offset through /run/tagmem/<tag>/data, the guest's write is in the host
  file after power-off, and the rest of the file is unchanged
  (test_booted_system's STAGE_HANDOFF and _check_handoff).
"""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path

import bootkit
import tagmemvm
import vmkit
from test_booted_system import (DRIVER, DRIVER_UNIT, GUEST_LIB, HANDOFF_LEN, K_GUEST, K_HOST,
                                STAGE_HANDOFF, _check_handoff, _handoff, _section,
                                _stage_check, package)  # noqa: F401 (package: a fixture)

#: What makes the image a distribution image that boots itself.
IMAGE_PACKAGES = ("linux-image-amd64", "initramfs-tools", "grub-pc")
#: The root filesystem's UUID (update-grub writes root=UUID=...).
FS_UUID = "7a9e6b00-0000-4000-8000-00000000b007"
#: Per boot; measured at about a minute each under TCG (docs/vm.md).
BOOT_TIMEOUT_S = 600
TH = tagmemvm.HANDOFF_TAG
DOCS = Path(__file__).resolve().parents[2] / "docs" / "vm.md"
ADMIN_SCRIPT = "/root/tagmem-admin.sh"

#: The image builder's GRUB settings (as cloud images have them): kernel
#: and GRUB on the serial console, no menu delay. no_timer_check and
#: panic=-1 as vmkit's own guests have them (vmkit.qemu_argv says why).
SERIAL_CFG = """\
# The image builder's: a serial console for GRUB and the kernel.
GRUB_CMDLINE_LINUX="console=ttyS0,115200 no_timer_check panic=-1"
GRUB_TERMINAL=serial
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_TIMEOUT=0
GRUB_TIMEOUT_STYLE=hidden
"""

FSTAB = f"UUID={FS_UUID} / ext4 errors=remount-ro 0 0\n"

STAGE_PREPARE = r"""
say "stage prepare: the image builder installs tagmem and GRUB"
say "kernel $(uname -r), root $(findmnt -n -o SOURCE /)"
[ "$(findmnt -n -o SOURCE /)" = /dev/vda1 ]
cd /root
section apt-install apt install -y ./tagmem_@VERSION@_amd64.deb
[ "$(systemctl is-enabled tagmemfs)" = enabled ]
section grub-install grub-install /dev/vda
section update-grub-builder update-grub
grep -q 'root=UUID=@FSUUID@' /boot/grub/grub.cfg
fails grep -q memmap= /boot/grub/grub.cfg
echo without >/var/lib/tagmem-test/next-stage
"""

STAGE_WITHOUT = r"""
say "stage without: GRUB booted the image's kernel; no memmap= yet"
TH=@TH@
section without-cmdline cat /proc/cmdline
section without-kernel uname -r
fails grep -q memmap= /proc/cmdline
fails grep -q tagmem.stage= /proc/cmdline
[ "$(systemctl is-active tagmemfs)" = active ]
section without-iomem grep -iE 'soft reserved|system ram' /proc/iomem
section without-node1 grep MemTotal /sys/devices/system/node/node1/meminfo
section without-item cat /sys/firmware/qemu_fw_cfg/by_name/opt/org.tagmem/tags/raw
section without-list tagmem list
section without-list-json tagmem list --json
unlisted $TH

say "the guest administrator's step (docs/vm.md): the host's memmap= into GRUB"
section admin-command cat @ADMIN@
section admin sh -ex @ADMIN@
section admin-cfg cat /etc/default/grub.d/tagmem.cfg
section grub-linux sh -c "grep -E '^[[:space:]]*linux[[:space:]]' /boot/grub/grub.cfg"
grep -qF -- '@KCMDLINE@' /boot/grub/grub.cfg
echo measured >/var/lib/tagmem-test/next-stage
"""

STAGE_MEASURED = r"""
say "stage measured: GRUB booted the image's kernel with the admin's memmap="
section measured-kernel uname -r
fails grep -q tagmem.stage= /proc/cmdline
grep -qF -- '@KCMDLINE@' /proc/cmdline
[ "$(systemctl is-active tagmemfs)" = active ]
""" + STAGE_HANDOFF + r"""
section measured-journal sh -c "journalctl -b -u tagmemfs.service -o short-monotonic --no-pager | head -n 20"
echo done >/var/lib/tagmem-test/next-stage
"""


def documented_admin_command(kernel_cmdline: str) -> str:
    """The guest administrator's command exactly as docs/vm.md gives it
    (section "Guests that boot their own kernel": the `echo
    'GRUB_CMDLINE_LINUX=...' ... && update-grub` lines), with the example's
    `memmap=...` replaced by the line the host's `tagmem vm-args
    --kernel-cmdline` printed."""
    text = DOCS.read_text()
    sec = text[text.index("### Guests that boot their own kernel"):]
    sec = sec[:sec.index("\n### ", 1)]
    m = re.search(r"^(echo 'GRUB_CMDLINE_LINUX=\"\$GRUB_CMDLINE_LINUX )(memmap=[^\"]*)(\"'.*?"
                  r"update-grub)$", sec, re.M | re.S)
    assert m, "docs/vm.md no longer shows the admin's echo ... && update-grub command"
    # What the template can carry unchanged: inside '...' nothing is special
    # to the shell; inside "..." in the .cfg file (sourced by grub-mkconfig)
    # and in grub.cfg, $, `, \ and quotes would be.
    assert not re.search(r"[$`\\\"'\s]", kernel_cmdline.replace(" ", "")), kernel_cmdline
    return m.group(1) + kernel_cmdline + m.group(3) + "\n"


def _image_kernel(tarball: Path, out: Path) -> tuple[str, Path, Path]:
    """The image's own kernel version, vmlinuz and initrd.img (made by
    initramfs-tools in mmdebstrap), copied out of the rootfs tarball."""
    names = vmkit._run(["tar", "-tf", tarball]).stdout.split()
    (vmlinuz,) = [n for n in names if re.fullmatch(r"\./boot/vmlinuz-\S+", n)]
    kver = vmlinuz.split("vmlinuz-", 1)[1]
    initrd = f"./boot/initrd.img-{kver}"
    assert initrd in names, f"no {initrd} in {tarball.name}: initramfs-tools made none"
    out.mkdir(parents=True, exist_ok=True)
    vmkit._run(["tar", "-C", out, "-xf", tarball, vmlinuz, initrd])
    return kver, out / vmlinuz, out / initrd


def test_grub_guest_with_admin_memmap(vm_assets, guest_tools, package, vm_timings, tmp_path):
    t_all = time.monotonic()
    deb, _ = package
    version = deb.name.split("_")[1]
    cache = vm_assets.cache_dir
    t0 = time.monotonic()
    tarball, rinfo = bootkit.rootfs_tarball(
        [*bootkit.BASE_PACKAGES, *bootkit.runtime_packages(deb), *IMAGE_PACKAGES], cache,
        flavor="grub")
    vm_timings["grub rootfs"] = "cache hit" if rinfo["cached"] else f"built in {rinfo['build_s']}s"
    kver, vmlinuz, initrd = _image_kernel(tarball, tmp_path / "image-boot")
    vm_timings["grub image kernel"] = f"{kver}, initrd.img {initrd.stat().st_size / vmkit.MiB:.0f} MiB"

    seeds = {k: random.getrandbits(62) | 1 for k in ("SEEDH", "SEEDG")}
    t_host = time.monotonic()
    handoff = _handoff(tmp_path, seeds["SEEDH"])
    # What the guest administrator is given: the real CLI's --kernel-cmdline line.
    line = tagmemvm.vm_args_from_synthetic_host(
        tagmemvm.build_dir(), tmp_path / "kcmd", ram=vmkit._parse_size(bootkit.GUEST_MEM), cpus=2,
        kernel_cmdline=True)
    assert line.endswith("\n") and line.count("\n") == 1, repr(line)
    line = line.strip()
    assert line == handoff["kernel_cmdline"], (line, handoff["kernel_cmdline"])
    assert re.fullmatch(r"memmap=0x[0-9a-f]+%0x[0-9a-f]+-1\+0xefffffff", line), line
    admin = documented_admin_command(line)
    vm_timings["grub host side (vm-args)"] = f"{time.monotonic() - t_host:.1f}s"

    def fill(text: str) -> bytes:
        for k, v in {"VERSION": version, "TH": TH, "HLEN": str(HANDOFF_LEN), "KHOST": str(K_HOST),
                     "KGUEST": str(K_GUEST), "FSUUID": FS_UUID, "KCMDLINE": line,
                     "ADMIN": ADMIN_SCRIPT, "T1": "-", "T2": "-", "T3": "-",
                     **{k: f"{v:#x}" for k, v in seeds.items()}}.items():
            text = text.replace(f"@{k}@", v)
        assert not re.search(r"@[A-Z][A-Z0-9]*@", text), re.findall(r".*@[A-Z][A-Z0-9]*@.*", text)
        return text.encode()

    lib = "/usr/local/lib/tagmem-test"
    files = {
        f"/root/{deb.name}": deb,
        ADMIN_SCRIPT: admin.encode(),
        f"{lib}/lib.sh": fill(GUEST_LIB),
        f"{lib}/stage-prepare.sh": fill(STAGE_PREPARE),
        f"{lib}/stage-without.sh": fill(STAGE_WITHOUT),
        f"{lib}/stage-measured.sh": fill(STAGE_MEASURED),
        f"{lib}/driver.sh@755": DRIVER.encode(),
        "/usr/local/bin/daxmap": guest_tools["daxmap"],
        "/etc/systemd/system/tagmem-test.service": DRIVER_UNIT.encode(),
        "/etc/default/grub.d/10-serial-console.cfg": SERIAL_CFG.encode(),
        "/etc/fstab": FSTAB.encode(),
        "/etc/hostname": b"tagmem-grub-guest\n",
        "/etc/machine-id": b"7461676d656d2d627574746f6e000012\n",
        "/var/lib/tagmem-test/next-stage": b"prepare\n",
    }
    symlinks = {
        "/etc/systemd/system/multi-user.target.wants/tagmem-test.service":
            "/etc/systemd/system/tagmem-test.service",
        "/etc/systemd/system/serial-getty@ttyS0.service": "/dev/null",
    }
    disk = tmp_path / "grub-disk.img"
    disk_s = bootkit.disk_image(disk, tarball, vm_assets, files, symlinks=symlinks, size="3G",
                                vmkit_modules=False, partitioned=True, fs_uuid=FS_UUID)
    vm_timings["grub image (rootfs to disk)"] = f"{disk_s:.1f}s ({time.monotonic() - t0:.1f}s " \
                                                "with rootfs and vm-args)"

    def record(stage: str, res: vmkit.BootResult) -> None:
        vm_timings[f"grub boot {stage}"] = (f"guest {res.elapsed_s:.1f}s, stage "
                                            f"{res.scenario_s or 0:.1f}s")
        _stage_check(res, stage)

    # Boot 1: the image builder's last step, on the image's own kernel and
    # initramfs (stage from the disk's next-stage file, none on the command line).
    prep = bootkit.start(initrd, disk, timeout_s=BOOT_TIMEOUT_S, kernel=vmlinuz,
                         root="/dev/vda1", name="grub-prepare", assets=vm_assets,
                         log_path=tmp_path / "prepare.log").wait()
    record("prepare", prep)
    assert "Installation finished. No error reported." in prep.section("grub-install")

    # Boot 2: firmware boot, the real vm-args with a throwaway file: no memmap=.
    throwaway = tmp_path / "throwaway-tag.data"
    tagmemvm.handoff_host_file(throwaway, seed=0x7e57)
    qemu_without = tagmemvm.with_backing_file(handoff["generated"]["qemu"], TH, throwaway)
    without = bootkit.start(None, disk, timeout_s=BOOT_TIMEOUT_S, extra_args=qemu_without,
                            name="grub-without", assets=vm_assets,
                            log_path=tmp_path / "without.log").wait()
    record("without (admin step)", without)
    _check_firmware_boot(without, kver)
    _check_without(without, handoff, line)
    assert tagmemvm.hash_outside(handoff["backing"], handoff["holes"]) == handoff["before"]

    # Boot 3: the measured boot.
    measured = bootkit.start(None, disk, timeout_s=BOOT_TIMEOUT_S, extra_args=handoff["qemu"],
                             name="grub-measured", assets=vm_assets,
                             log_path=tmp_path / "measured.log").wait()
    record("measured", measured)
    _check_firmware_boot(measured, kver)
    cmdline = _section(measured, "handoff-cmdline").strip()
    assert f" {line} " in f" {cmdline} ", cmdline
    assert cmdline.count("memmap=") == 1, cmdline
    _check_handoff(measured, handoff, seeds)
    vm_timings["grub guest test total"] = f"{time.monotonic() - t_all:.0f}s"


def _check_firmware_boot(res: vmkit.BootResult, kver: str) -> None:
    """No -kernel/-initrd/-append from the host: SeaBIOS booted the disk,
    GRUB loaded the image's own kernel (its console lines), and that kernel
    runs."""
    for opt in ("-kernel", "-initrd", "-append"):
        assert opt not in res.argv, res.argv
    assert re.search(rf"Loading Linux {re.escape(kver)} \.\.\.", res.console), res.tail(80)
    assert "Loading initial ramdisk ..." in res.console, res.tail(80)
    stage = "without" if "grub-without" in res.name else "measured"
    assert _section(res, f"{stage}-kernel").strip() == kver
    booted = _section(res, "without-cmdline" if stage == "without" else "handoff-cmdline")
    assert booted.startswith(f"BOOT_IMAGE=/boot/vmlinuz-{kver} root=UUID={FS_UUID} "), booted


def _check_without(res: vmkit.BootResult, handoff: dict, line: str) -> None:
    """Without the admin's line: the tag's range is the guest's RAM on node
    1, the guest's tagmem rejects the fw_cfg entry; then the admin's step
    puts the line into every `linux` line of grub.cfg."""
    (tag,) = handoff["generated"]["layout"]["tags"]
    start, size = tag["guest_start"], tag["size"]
    ram = [tuple(int(x, 16) for x in m) for m in
           re.findall(r"^\s*([0-9a-f]+)-([0-9a-f]+) : System RAM$",
                      _section(res, "without-iomem"), re.M)]
    assert any(a <= start and start + size - 1 <= b for a, b in ram), _section(res, "without-iomem")
    assert "Soft Reserved" not in _section(res, "without-iomem")
    node1_kb = int(re.search(r"MemTotal:\s+(\d+) kB", _section(res, "without-node1")).group(1))
    assert node1_kb * 1024 > size // 2, _section(res, "without-node1")
    listed = json.loads(_section(res, "without-list-json"))
    assert TH not in [t["tag"] for t in listed["tags"]], listed
    reasons = [r["reason"] for r in listed["rejected"]]
    assert any(r.startswith(f"tag {TH}: no dax device has its range on guest node 1")
               for r in reasons), reasons
    assert f"tag {TH}: no dax device" in _section(res, "without-list")
    cfg = _section(res, "admin-cfg")
    assert cfg == f'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX {line}"\n', cfg
    linux = [ln for ln in _section(res, "grub-linux").splitlines() if ln.strip()]
    assert linux, _section(res, "grub-linux")
    for ln in linux:
        # The builder's line first, then the admin's, then Debian's default.
        assert f" console=ttyS0,115200 no_timer_check panic=-1 {line}" in ln, ln
