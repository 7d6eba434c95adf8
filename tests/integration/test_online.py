# SPDX-License-Identifier: Apache-2.0
"""tagmem online / offline on synthetic hosts: every refusal, with its exit
code and message, and nothing changed. libdaxctl cannot really rebind
drivers on a fake sysfs (writing `unbind` there changes no driver link), so
the one path that reaches the kernel here is the kernel "refusing"; the
real onlining is tested in a QEMU guest (tests/qemu/test_online_real.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hostgen as hg
from conftest import run_as, run_tagmem, write_config, TAGMEM

ALLOW_NV0 = f"[tag {hg.TAG_NV0}]\nonline = allow\n"


PIDNS_SHIM = TAGMEM.parents[1] / "tests" / "libhost_pidns_shim.so"
HOSTILE_FUSE = TAGMEM.parents[1] / "tests" / "hostile_fuse"


def run_isolated(*args, config: Path, hold: tuple[str, ...] = (), host_pidns: bool = True,
                 mount_proc: bool = True, timeout: float = 120):
    """tagmem in a PID namespace of its own, with a fresh /proc: its scan of
    /proc sees only this namespace's processes, which this machine lets it
    inspect (outside, even root may not follow another container's
    /proc/<pid>/fd links, and tagmem rightly refuses what it cannot check).
    tagmem refuses to online from a child PID namespace (exit 15); with
    host_pidns, a shim (host_pidns_shim.c) makes it believe it is in the
    host's. hold: paths that the namespace's first process keeps open while
    tagmem runs: O_PATH (the synthetic device nodes have no driver behind
    them; such a descriptor is no use of the device), or O_RDONLY when
    written "r:<path>"."""
    script = ("import os, subprocess, sys\n"
              "fds = [os.open(p[2:], os.O_RDONLY) if p.startswith('r:') else\n"
              "       os.open(p, os.O_PATH) for p in sys.argv[2:]]\n"
              "print('held', *fds, file=sys.stderr)\n"
              f"argv = [{str(TAGMEM)!r}, '--config', {str(config)!r}, *{list(args)!r}]\n"
              "sys.exit(subprocess.run(argv).returncode)\n")
    env = dict(os.environ)
    # LeakSanitizer cannot stop the world from inside a PID namespace of its
    # own ("LeakSanitizer has encountered a fatal error", exit 1): the same
    # code is leak-checked by the tests that run it unisolated.
    env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
    if host_pidns:
        env["LD_PRELOAD"] = str(PIDNS_SHIM)
        env["ASAN_OPTIONS"] += ":verify_asan_link_order=0"
    unshare = ["unshare", "--pid", "--fork"] + (["--mount-proc"] if mount_proc else [])
    return subprocess.run([*unshare, sys.executable, "-c", script, "x", *hold],
                          capture_output=True, text=True, timeout=timeout, env=env)


def device_state(host, name: str) -> tuple:
    """What a change would touch: the driver link and the memory blocks."""
    dev = host.sys / "bus" / "dax" / "devices" / name
    driver = os.readlink(dev / "driver") if (dev / "driver").is_symlink() else None
    memory = host.sys / "devices" / "system" / "memory"
    blocks = sorted((p.name, (p / "state").read_text()) for p in memory.glob("memory*"))
    return driver, blocks


def refused(r, code: int, *words: str) -> None:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    for w in words:
        assert w in r.stderr, (w, r.stderr)
    assert "nothing was changed" in r.stderr or code in (2, 10, 13), r.stderr


def test_not_root_exits_10(make_host, tmp_path):
    make_host("nvdimm")
    for cmd in ("online", "offline"):
        r = run_as(1000, 1000, f"import subprocess,sys; r = subprocess.run(['{TAGMEM}', '{cmd}', "
                               f"'{hg.TAG_NV0}']); sys.exit(r.returncode)")
        assert r.returncode == 10, (r.stdout, r.stderr)
        assert "run it as root" in r.stderr


def test_malformed_tag_exits_2(make_host):
    make_host("nvdimm")
    for cmd in ("online", "offline"):
        refused(run_tagmem(cmd, "not-a-uuid"), 2, "not a UUID")


def test_without_the_opt_in_exits_11(make_host, tmp_path):
    host = make_host("nvdimm")
    before = device_state(host, "dax1.0")
    # No configuration at all, a section without online, online = deny.
    configs = [None, write_config(tmp_path, f"[tag {hg.TAG_NV0}]\nname = x\n", "a.conf"),
               write_config(tmp_path, f"[tag {hg.TAG_NV0}]\nonline = deny\n", "b.conf")]
    for config in configs:
        for cmd in ("online", "offline"):
            r = run_tagmem(cmd, hg.TAG_NV0, config=config)
            refused(r, 11, "is not allowed to become system RAM", "'online = allow'")
    # Another tag's opt-in is not this one's.
    other = write_config(tmp_path, f"[tag {hg.TAG_NV1}]\nonline = allow\n", "c.conf")
    refused(run_tagmem("online", hg.TAG_NV0, config=other), 11)
    assert device_state(host, "dax1.0") == before


def test_shareable_tag_needs_the_second_setting(make_host, tmp_path):
    host = make_host("nvdimm")
    before = device_state(host, "dax1.0")
    config = write_config(tmp_path, ALLOW_NV0 + "shareable = yes\n")
    refused(run_tagmem("online", hg.TAG_NV0, config=config), 11, "is shareable",
            "online-shareable = allow")
    # With it, the opt-in is complete: the refusal is another one (below).
    both = write_config(tmp_path, ALLOW_NV0 + "shareable = yes\nonline-shareable = allow\n",
                        "both.conf")
    r = run_tagmem("online", hg.TAG_NV0, config=both)
    assert r.returncode not in (11, 0), r.stderr
    assert device_state(host, "dax1.0") == before


def test_configuration_errors_exit_14(make_host, tmp_path):
    host = make_host("nvdimm")
    before = device_state(host, "dax1.0")
    for text, why in [(f"[tag {hg.TAG_NV0}]\nonline = yes\n", "expected allow or deny"),
                      (f"[tag {hg.TAG_NV0}]\nonline-shareable = allow\n",
                       "without online = allow"),
                      (ALLOW_NV0 + f"[tag {hg.TAG_NV1}]\ncolour = red\n", "unknown key")]:
        config = write_config(tmp_path, text)
        refused(run_tagmem("online", hg.TAG_NV0, config=config), 14, "has errors", why)
    refused(run_tagmem("online", hg.TAG_NV0, config=tmp_path / "missing.conf"), 14,
            "missing.conf")
    assert device_state(host, "dax1.0") == before


def test_unknown_conflict_and_offered_tags(make_host, tmp_path):
    make_host("conflict")
    config = write_config(tmp_path, f"[tag {hg.TAG_CONFLICT}]\nonline = allow\n")
    refused(run_tagmem("online", hg.TAG_CONFLICT, config=config), 4, "conflict")
    refused(run_tagmem("offline", hg.TAG_CONFLICT, config=config), 4, "conflict")
    unknown = "12345678-0000-4000-8000-000000000000"
    refused(run_tagmem("online", unknown, config=config), 3, "no device carries tag")
    make_host("dcd")
    # A DCD tag is shareable unless configured otherwise (issue 19): the
    # opt-in must say so, or the refusal is that (test_a_dcd_tag_...).
    config = write_config(tmp_path, f"[tag {hg.TAG_C}]\nonline = allow\n"
                                    "online-shareable = allow\n", "c.conf")
    refused(run_tagmem("online", hg.TAG_C, config=config), 5, "offered")


def test_a_dcd_tag_is_shareable_unless_configured_not(make_host, tmp_path):
    """Issue 19: DCD capacity may be another host's too; `online = allow`
    alone does not hand it to this host's page allocator (exit 11), until
    tagmem.conf says `shareable = no` (or online-shareable = allow)."""
    make_host("dcd")
    alone = write_config(tmp_path, f"[tag {hg.TAG_C}]\nonline = allow\n", "alone.conf")
    refused(run_tagmem("online", hg.TAG_C, config=alone), 11, "is shareable",
            "online-shareable = allow")
    listed = {t["tag"]: t for t in json.loads(run_tagmem("list", "--json").stdout)["tags"]}
    assert (listed[hg.TAG_C]["shareable"], listed[hg.TAG_C]["shareable_from"]) == (True, "default")
    not_shared = write_config(tmp_path, f"[tag {hg.TAG_C}]\nonline = allow\nshareable = no\n",
                              "no.conf")
    refused(run_tagmem("online", hg.TAG_C, config=not_shared), 5, "offered")


def test_a_path_only_descriptor_is_no_use_of_the_device(make_host, tmp_path):
    """An O_PATH descriptor of the device (through /dev, or another node of
    its number) neither reads nor maps it (issue 19): not in use, and the
    next step is reached (the fake driver does not let go, below). That an
    open or mapped device is refused (exit 12, its users named) is
    tests/unit/online_test.cpp's and qemu_online's: a synthetic node cannot
    be opened."""
    host = make_host("nvdimm")
    before = device_state(host, "dax1.0")
    config = write_config(tmp_path, ALLOW_NV0)
    other_node = tmp_path / "own-node"  # another node of the same number
    os.mknod(other_node, 0o600 | 0o020000, os.stat("/dev/dax1.0").st_rdev)
    for path in ("/dev/dax1.0", str(other_node), "/dev/dax1.1"):
        r = run_isolated("online", hg.TAG_NV0, config=config, hold=(path,))
        assert r.returncode == 13, (path, r.returncode, r.stderr)
        assert "cannot unbind device_dax" in r.stderr, r.stderr
    assert device_state(host, "dax1.0") == before


def test_from_a_child_pid_namespace_exits_15(make_host, tmp_path):
    """Issue 19: there /proc does not show every process. Also when /proc is
    the namespace's own, whose pid 1 (its init) is in the same namespace."""
    host = make_host("nvdimm")
    before = device_state(host, "dax1.0")
    config = write_config(tmp_path, ALLOW_NV0)
    for mount_proc in (True, False):
        r = run_isolated("online", hg.TAG_NV0, config=config, host_pidns=False,
                         mount_proc=mount_proc)
        refused(r, 15, "PID namespace other than the host's", "pid:[4026531836]")
    assert device_state(host, "dax1.0") == before


@pytest.fixture
def hostile_fuse(tmp_path):
    """A FUSE filesystem at tmp_path/hostile (hostile_fuse.c) whose
    claims-dax has the number of /dev/dax1.0 and whose never-answers never
    answers GETATTR; killed and unmounted afterwards."""
    mnt = tmp_path / "hostile"
    mnt.mkdir()
    procs = []

    def start(rdev: int) -> Path:
        p = subprocess.Popen([str(HOSTILE_FUSE), str(mnt), str(os.major(rdev)),
                              str(os.minor(rdev))], stderr=subprocess.PIPE, text=True)
        procs.append(p)
        assert "mounted" in p.stderr.readline()
        return mnt

    yield start
    for p in procs:
        p.kill()
        p.wait()
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_hostile_fuse_file_neither_fools_nor_hangs_online(make_host, tmp_path, hostile_fuse):
    """Issue 19: a process's FUSE file that claims the device's number is no
    user of it (held O_PATH: the only way a user holds a char node of a
    nodev mount), and one whose GETATTR never comes back does not hang the
    scan (no stat() of what processes hold: statx AT_STATX_DONT_SYNC)."""
    host = make_host("nvdimm")
    before = device_state(host, "dax1.0")
    config = write_config(tmp_path, ALLOW_NV0)
    mnt = hostile_fuse(os.stat("/dev/dax1.0").st_rdev)
    assert os.stat(mnt / "claims-dax").st_rdev == os.stat("/dev/dax1.0").st_rdev
    r = run_isolated("online", hg.TAG_NV0, config=config, hold=(str(mnt / "claims-dax"),))
    assert r.returncode == 13 and "cannot unbind device_dax" in r.stderr, (r.returncode, r.stderr)
    r = run_isolated("online", hg.TAG_NV0, config=config,
                     hold=("r:" + str(mnt / "never-answers"),), timeout=60)
    assert r.returncode == 13 and "cannot unbind device_dax" in r.stderr, (r.returncode, r.stderr)
    assert device_state(host, "dax1.0") == before


def test_a_process_tagmem_cannot_inspect_is_taken_as_a_user(make_host, tmp_path):
    """Outside a PID namespace of its own, this machine denies even root
    some /proc/<pid>/fd links (other containers' processes): when it does,
    tagmem refuses rather than guess. Skipped where every process can be
    inspected (then there is nothing to refuse)."""
    make_host("nvdimm")
    denied = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                os.stat(f"/proc/{pid}/fd/{fd}")
        except PermissionError:
            denied.append(pid)
            break
        except (FileNotFoundError, ProcessLookupError):
            continue
    if not denied:
        pytest.skip("every process's descriptors can be inspected here")
    r = run_tagmem("online", hg.TAG_NV0, config=write_config(tmp_path, ALLOW_NV0))
    refused(r, 12, "cannot tell who uses the device", "Permission denied")


def test_a_driver_that_does_not_let_go_exits_13(make_host, tmp_path):
    """The whole online path up to the kernel: libdaxctl writes `unbind`, the
    (fake) driver link stays, and tagmem says so, device unchanged."""
    host = make_host("nvdimm")
    before = device_state(host, "dax1.0")
    r = run_isolated("online", hg.TAG_NV0, config=write_config(tmp_path, ALLOW_NV0))
    assert r.returncode == 13, (r.stdout, r.stderr)
    assert "cannot unbind device_dax; nothing was changed" in r.stderr
    assert device_state(host, "dax1.0") == before


def test_an_auto_online_policy_is_refused_before_anything(make_host, tmp_path):
    host = make_host("nvdimm")
    policy = host.sys / "devices" / "system" / "memory" / "auto_online_blocks"
    policy.write_text("online\n")
    unbind = host.sys / "bus" / "dax" / "drivers" / "device_dax" / "unbind"
    r = run_isolated("online", hg.TAG_NV0, config=write_config(tmp_path, ALLOW_NV0))
    assert r.returncode == 13, r.stderr
    assert "auto_online_blocks = online" in r.stderr and "Nothing was changed" in r.stderr
    assert unbind.read_text() == ""  # libdaxctl was never asked to unbind
    policy.unlink()
    r = run_isolated("online", hg.TAG_NV0, config=write_config(tmp_path, ALLOW_NV0))
    assert r.returncode == 13 and "no memory hotplug" in r.stderr, r.stderr
    assert unbind.read_text() == ""


def test_already_there_is_success_and_does_nothing(make_host, tmp_path):
    host = make_host("system-ram")
    before = device_state(host, "dax0.0")
    # A DCD tag: shareable by default (issue 19), so both settings.
    config = write_config(tmp_path, f"[tag {hg.TAG_RAM}]\nonline = allow\n"
                                    "online-shareable = allow\n")
    r = run_tagmem("online", hg.TAG_RAM, config=config)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert "already system RAM" in r.stdout
    assert device_state(host, "dax0.0") == before
    # Offline without the opt-in: refused, blocks untouched.
    refused(run_tagmem("offline", hg.TAG_RAM), 11)
    assert device_state(host, "dax0.0") == before
    make_host("nvdimm")
    r = run_tagmem("offline", hg.TAG_NV0, config=write_config(tmp_path, ALLOW_NV0, "n.conf"))
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert "already devdax" in r.stdout
