# SPDX-License-Identifier: Apache-2.0
"""Issue 12: a host tag handed to a guest started by a real libvirt
(CTest qemu_libvirt_handoff).

`tagmem vm-args --libvirt`, run for real on a synthetic host that has the tag
(tagmemvm.vm_args_from_synthetic_host), gives a domain XML fragment. The test
merges it into a minimal domain (direct kernel boot of vmkit's kernel and an
initramfs with the guest's tagmem, the generated memmap= on <cmdline>, the
serial console into a file), with the one documented switch: the tag's
mem-path in the <qemu:commandline> passthrough names a plain file (no real
devdax on this CI host). libvirt 9 (Debian 12's libvirtd) defines and
starts it with `virsh define` / `virsh start` (domain type 'qemu', TCG: no
KVM here). Checked from the guest's serial log: the guest's tagmem lists the
tag with the host's size, name, shareable flag and performance data, reads
the host's pattern at offset K_HOST of /run/tagmem/<tag>/data, and its
write at K_GUEST is at K_GUEST of the host's file.

The daemon: no systemd here, so the test starts its own libvirtd in session
mode (qemu:///session) as an unprivileged user (nobody, 65534) with private
XDG config/cache/runtime directories: nothing of the host's libvirt
configuration, sockets or domains is used or changed. QEMU then runs as that
user, as it runs as libvirt-qemu under qemu:///system; the least privilege
that lets it map the tag is the tag's own access: the backing file (the
tag's data) is owned by that user, mode 0600, like `owner = ` in
tagmem.conf(5). Before that, with the file root's (0600, tagmem.conf's
default), `virsh start` must fail with "Permission denied" and leave the
domain shut off. The daemon, the domain and its QEMU are gone at the end
(finally), whatever happened.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import tagmemvm
import vmkit
from conftest import skip_loudly
from test_real_devdax import _seed

MiB = vmkit.MiB
TAG = tagmemvm.HANDOFF_TAG
LEN = 256 * 1024
K_HOST = 7 * MiB + 5 * 4096 + 16
K_GUEST = 41 * MiB + 8192 + 56
GUEST_TIMEOUT_S = 300
VMM_UID = 65534  # nobody: the libvirt session daemon's and its QEMU's user
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


class Libvirt:
    """A private libvirtd (session mode) run as VMM_UID, and virsh against it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        home = root / "home"
        run = root / "run"
        for d in (home, run):
            d.mkdir(mode=0o700)
            os.chown(d, VMM_UID, VMM_UID)
        self.env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home),
                    "XDG_RUNTIME_DIR": str(run), "XDG_CONFIG_HOME": str(home / ".config"),
                    "XDG_CACHE_HOME": str(home / ".cache"), "LC_ALL": "C"}
        self.log = root / "libvirtd.log"
        self.proc: subprocess.Popen | None = None

    def _as_vmm(self) -> list[str]:
        return ["setpriv", f"--reuid={VMM_UID}", f"--regid={VMM_UID}", "--clear-groups"]

    def start(self, libvirtd: str) -> None:
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen([*self._as_vmm(), libvirtd], env=self.env, stdout=fh,
                                         stderr=subprocess.STDOUT, cwd=self.root,
                                         start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"libvirtd exited {self.proc.returncode}: "
                                   + self.log.read_text(errors="replace")[-2000:])
            if self.virsh("version").returncode == 0:
                return
            time.sleep(0.5)
        raise RuntimeError("libvirtd did not answer within 30 s: "
                           + self.log.read_text(errors="replace")[-2000:])

    def virsh(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self._as_vmm(), "virsh", "-c", "qemu:///session", *args],
                              env=self.env, capture_output=True, text=True, timeout=120)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _domain_xml(fragment: str, *, name: str, kernel: Path, initrd: Path, cmdline: str,
                serial_log: Path, backing: Path) -> str:
    """The generated fragment merged into a minimal whole domain; only the
    tag's mem-path is swapped for ``backing``."""
    ET.register_namespace("qemu", QEMU_NS)
    dom = ET.fromstring(fragment)
    assert dom.tag == "domain", fragment
    dom.set("type", "qemu")  # TCG: no KVM on this machine
    cmd = dom.find(f"{{{QEMU_NS}}}commandline")
    args = cmd.findall(f"{{{QEMU_NS}}}arg")
    values = tagmemvm.with_backing_file([a.get("value") for a in args], TAG, backing)
    for a, v in zip(args, values):
        a.set("value", v)
    ET.SubElement(dom, "name").text = name
    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(os_el, "kernel").text = str(kernel)
    ET.SubElement(os_el, "initrd").text = str(initrd)
    ET.SubElement(os_el, "cmdline").text = cmdline
    features = ET.SubElement(dom, "features")
    ET.SubElement(features, "acpi")  # the NUMA nodes are described in ACPI's SRAT
    ET.SubElement(dom, "on_poweroff").text = "destroy"
    ET.SubElement(dom, "on_reboot").text = "destroy"
    ET.SubElement(dom, "on_crash").text = "destroy"
    devices = ET.SubElement(dom, "devices")
    ET.SubElement(devices, "emulator").text = vmkit.qemu_binary()
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=str(serial_log))
    ET.SubElement(serial, "target", port="0")
    ET.SubElement(devices, "memballoon", model="none")
    return ET.tostring(dom, encoding="unicode")


def _boot_result(name: str, console: str, elapsed: float, timed_out: bool) -> vmkit.BootResult:
    verdict, rc = "NO-VERDICT", None
    for m in vmkit.VERDICT_RE.finditer(console):
        verdict, rc = ("PASS", 0) if m.group(1) == "PASS" else ("FAIL", int(m.group(2)))
    if timed_out:
        verdict = "TIMEOUT"
    lines = console.splitlines()
    oops = next(("\n".join(lines[i:i + 60]) for i, line in enumerate(lines)
                 if vmkit.OOPS_RE.search(line)), None)
    return vmkit.BootResult(name, [], console, elapsed, verdict, rc, timed_out, None, None,
                            None, oops)


def test_libvirt_starts_the_generated_domain(vm_assets, product, guest_tools, vm_timings):
    libvirtd = shutil.which("libvirtd") or shutil.which("libvirtd", path="/usr/sbin")
    if not libvirtd or not shutil.which("virsh") or not shutil.which("setpriv"):
        skip_loudly("libvirtd (libvirt-daemon, libvirt-daemon-driver-qemu) or virsh "
                    "(libvirt-clients) is not installed: the libvirt hand-off was not tried")
    seeds = {"host": _seed(), "guest": _seed()}
    # Everything libvirt's QEMU opens lives in a directory of its user; the
    # test's own tmp_path (root 0700) is not reachable for it.
    root = Path(tempfile.mkdtemp(prefix="tagmem-libvirt-"))
    os.chmod(root, 0o711)
    lv = Libvirt(root)
    name = f"tagmem-handoff-{os.getpid()}"
    guest_dir = root / "guest"
    guest_dir.mkdir()
    backing = guest_dir / "tag.data"
    tagmemvm.handoff_host_file(backing)
    with open(backing, "r+b") as fh:
        fh.seek(K_HOST)
        fh.write(vmkit.daxmap_pattern(seeds["host"], LEN))
    serial_log = guest_dir / "serial.log"
    defined = False
    try:
        for d in ("host-xml", "host-json"):
            (root / d).mkdir()
        fragment = tagmemvm.vm_args_from_synthetic_host(tagmemvm.build_dir(), root / "host-xml",
                                                        libvirt=True)
        generated = tagmemvm.vm_args_from_synthetic_host(tagmemvm.build_dir(),
                                                         root / "host-json")
        memmap = generated["kernel_cmdline"]
        assert memmap in fragment, ("the fragment's comment names the memmap=", fragment)
        steps = f"""
daxmap verify "$D" {seeds['host']:#x} {LEN} {K_HOST}
echo "TM-EVENT: read the host's pattern uptime=$(tm_now)"
daxmap write "$D" {seeds['guest']:#x} {LEN} {K_GUEST}
echo "TM-EVENT: wrote uptime=$(tm_now)"
"""
        initrd = tagmemvm.build_initrd(guest_dir / "initrd.cpio",
                                       tagmemvm.handoff_scenario(TAG, steps),
                                       assets=vm_assets, product=product, tools=guest_tools)
        kernel = guest_dir / "vmlinuz"
        shutil.copyfile(vm_assets.kernel, kernel)
        cmdline = " ".join(["console=ttyS0", "quiet", "panic=-1", "no_timer_check",
                            "rdinit=/init", "TM_HOST=L", memmap])
        xml_path = guest_dir / "domain.xml"
        xml_path.write_text(_domain_xml(fragment, name=name, kernel=kernel, initrd=initrd,
                                        cmdline=cmdline, serial_log=serial_log,
                                        backing=backing))
        for p in (guest_dir, *guest_dir.iterdir()):
            os.chown(p, VMM_UID, VMM_UID)
        os.chmod(backing, 0o600)  # the tag's data: its owner is the VMM's user

        t0 = time.monotonic()
        try:
            lv.start(libvirtd)
        except RuntimeError as exc:
            skip_loudly(f"libvirtd cannot run on this machine: {exc}")
        vm_timings["libvirt daemon up"] = f"{time.monotonic() - t0:.1f}s"
        r = lv.virsh("define", str(xml_path))
        assert r.returncode == 0, (r.stdout, r.stderr, xml_path.read_text())
        defined = True
        # Access is the tag's: while the data is root's (0600, tagmem.conf's
        # default) libvirt's QEMU may not open it and the domain does not start.
        os.chown(backing, 0, 0)
        r = lv.virsh("start", name)
        assert r.returncode != 0 and "Permission denied" in r.stderr, (r.stdout, r.stderr)
        assert lv.virsh("domstate", name).stdout.strip() == "shut off"
        os.chown(backing, VMM_UID, VMM_UID)
        t1 = time.monotonic()
        r = lv.virsh("start", name)
        qemu_log = root / "home" / ".cache" / "libvirt" / "qemu" / "log" / f"{name}.log"
        assert r.returncode == 0, (r.stdout, r.stderr, xml_path.read_text(),
                                   qemu_log.exists() and qemu_log.read_text(errors="replace"))
        vm_timings["libvirt virsh start"] = f"{time.monotonic() - t1:.1f}s"
        # The guest powers off at its verdict (on_poweroff destroy); poll the log.
        timed_out = True
        while time.monotonic() - t1 < GUEST_TIMEOUT_S:
            text = serial_log.read_text(errors="replace") if serial_log.exists() else ""
            if vmkit.VERDICT_RE.search(text):
                timed_out = False
                break
            if lv.virsh("domstate", name).stdout.strip() == "shut off":
                timed_out = False
                break
            time.sleep(1)
        elapsed = time.monotonic() - t1
        vm_timings["libvirt guest wall"] = f"{elapsed:.1f}s"
        console = serial_log.read_text(errors="replace") if serial_log.exists() else ""
        res = _boot_result(name, console, elapsed, timed_out)
        argv = qemu_log.read_text(errors="replace") if qemu_log.exists() else ""

        assert res.passed, f"{res.verdict}\n{res.tail(80)}\nQEMU log:\n{argv[-3000:]}"
        # libvirt started QEMU with the passthrough: the tag's backend and node.
        assert f"mem-path={backing}" in argv and "node,nodeid=1,memdev=tagmem1" in argv, argv
        assert "name=opt/org.tagmem/tags,string=" in argv, argv  # -fw_cfg passthrough
        item = tagmemvm.section_json(res, "handoff-item")
        assert item == generated["fw_cfg"]["content"], item
        assert "dax0.0 driver= target_node=1 " in tagmemvm.section(res, "dax-before")
        assert "dax0.0 driver=device_dax" in tagmemvm.section(res, "dax-after")
        tagmemvm.check_handoff_guest(res, TAG)
        events = tagmemvm.events(res)
        assert any(e.startswith("wrote") for e in events), events
        with open(backing, "rb") as fh:
            fh.seek(K_GUEST)
            assert fh.read(LEN) == vmkit.daxmap_pattern(seeds["guest"], LEN), \
                "the guest's write is not at the same offset of the host's file"
    finally:
        if lv.proc is not None and lv.proc.poll() is None:
            if defined:
                lv.virsh("destroy", name)
                lv.virsh("undefine", name)
            lv.stop()
        # A QEMU libvirt could not destroy: its pid file, killed by that pid.
        pidfile = root / "run" / "libvirt" / "qemu" / "run" / f"{name}.pid"
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
            except (ValueError, ProcessLookupError):
                pass
        shutil.rmtree(root, ignore_errors=True)
