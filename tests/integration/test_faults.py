# SPDX-License-Identifier: Apache-2.0
"""Faults: tagmemfs driven out of file descriptors (EMFILE), as a hostile
local user can drive it, keeps every tag it knows through rescans, device
events and extent polls, and catches up once it can read again.

The daemon's descriptor limit is lowered while it runs (prlimit --pid) to
the lowest descriptor it has free, plus a few spare: exactly what holding
its other descriptors open would do, without depending on how (the watch
socket's connections may be limited per user)."""
from __future__ import annotations

import functools
import os
import resource
import shutil
import signal
import json
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import hostgen as hg
import pytest
import conftest
from conftest import TAGMEMFS, mount_options, preload_env, write_config

GiB, MiB = hg.GiB, hg.MiB
# Events enough to overflow tagmemfs's event socket (64 MiB asked for,
# twice that granted, about 1 KiB each).
FLOOD = 200_000
TAG_HMEM = "7e570000-0000-4000-8000-0000000000f1"
CONFIG = f"""[tag {TAG_HMEM}]
match-range = 0x3000000000-0x31ffffffff
mode = 0640
"""


def lowest_free_fd(pid: int) -> int:
    used = {int(n) for n in os.listdir(f"/proc/{pid}/fd")}
    return next(fd for fd in range(len(used) + 1) if fd not in used)


def set_fd_limit(pid: int, soft: int) -> None:
    hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)[1]
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))


def starve(pid: int, spare: int) -> None:
    """From now on the daemon can open at most `spare` more descriptors
    (more only where it has closed some below its highest)."""
    if "ASAN_OPTIONS" in os.environ or "TSAN_OPTIONS" in os.environ:
        # The sanitizer runtimes open files of their own (report files,
        # /proc/self/maps to symbolize) and fail hard when they cannot: a
        # daemon starved of descriptors under them tests the runtime. These
        # tests run in the plain build (the main CTest pass) only.
        pytest.skip("SKIPPED LOUDLY: descriptor starvation is not tested under sanitizers "
                    "(their runtimes need descriptors); it runs in the plain build")
    set_fd_limit(pid, lowest_free_fd(pid) + spare)


def feed(pid: int) -> None:
    set_fd_limit(pid, 1024)


def snapshot(mnt: Path) -> dict[str, str]:
    """Every tag with its metadata, read through the mount (which costs the
    daemon no descriptor)."""
    return {tag: (mnt / tag / "metadata").read_text() for tag in sorted(os.listdir(mnt))}


eventually = functools.partial(conftest.eventually, timeout=30.0, pause=0.05)


def start(tagmemfs, tmp_path, uevents="none"):
    conf = write_config(tmp_path, CONFIG)
    return tagmemfs("--config", conf, "--uevents", uevents, "--extent-poll-ms", "50")


@pytest.mark.parametrize("spare", [0, 1])
def test_rescan_out_of_descriptors_keeps_every_tag(make_host, tagmemfs, tmp_path, spare):
    host = make_host("mixed")
    d = start(tagmemfs, tmp_path)
    mnt = d.mount_point
    before = snapshot(mnt)
    assert {hg.TAG_A, hg.TAG_B, hg.TAG_C, hg.TAG_NV0, hg.TAG_NV1, TAG_HMEM} <= set(before)
    pid = d.proc.pid
    starve(pid, spare)
    try:
        for _ in range(3):
            d.rescan()
            time.sleep(0.3)  # extent polls and retries run starved too
            assert snapshot(mnt) == before
    finally:
        feed(pid)
    if spare == 0:
        # Nothing could be opened: the scan did fail, and said so once.
        log = d.text()
        assert "Too many open files" in log
        eventually(lambda: "reads of the host succeed again" in d.text(),
                   what="the retry to succeed")
        assert d.text().count("keeping what was last read and retrying") == 1
    assert snapshot(mnt) == before
    # Afterwards changes arrive as they should: TAG_B released, the
    # NVDIMM namespaces gone.
    host.rewrite(_without_b())
    d.rescan()
    eventually(lambda: set(os.listdir(mnt)) == {hg.TAG_A, hg.TAG_C, TAG_HMEM},
               what="the rescan after the fault")


def _without_b() -> hg.Host:
    """dcd() + the hmem device, without dax0.1 and TAG_B's extent."""
    out = hg.Host()
    out.node(1, **hg.CXL_NODE_PERF)
    r = out.dcd_region(region_id=0, base=0x10_0000_0000, size=16 * GiB)
    r.extent(offset=0, length=GiB, uuid=hg.TAG_A)
    r.extent(offset=2 * GiB, length=512 * MiB, uuid=hg.TAG_A)
    r.extent(offset=4 * GiB, length=GiB, uuid=hg.TAG_C)
    r.dax(dev_id=0, uuid=hg.TAG_A)
    out.hmem(region_id=2, base=0x30_0000_0000, size=8 * GiB, target_node=2)
    return out


def test_extents_polled_out_of_descriptors_stay(make_host, tagmemfs, tmp_path):
    host = make_host("dcd")
    d = start(tagmemfs, tmp_path)
    mnt = d.mount_point
    before = snapshot(mnt)
    assert hg.TAG_C in before  # offered by its extent alone
    pid = d.proc.pid
    # TAG_C's extent leaves while the daemon cannot list the region: the
    # poll must not take the failed listing for an empty region.
    nxt = hg.Host()
    nxt.node(1, **hg.CXL_NODE_PERF)
    r = nxt.dcd_region(region_id=0, base=0x10_0000_0000, size=16 * GiB)
    r.extent(offset=0, length=GiB, uuid=hg.TAG_A)
    r.extent(offset=GiB, length=256 * MiB, uuid=hg.TAG_B)
    r.extent(offset=2 * GiB, length=512 * MiB, uuid=hg.TAG_A)
    r.extent(offset=3 * GiB, length=256 * MiB, uuid=None)
    r.dax(dev_id=0, uuid=hg.TAG_A)
    r.dax(dev_id=1, uuid=hg.TAG_B)
    r.dax(dev_id=2, uuid=hg.ZERO_UUID)
    r.dax(dev_id=3, size=0, uuid=hg.ZERO_UUID, mode="disabled")
    starve(pid, 0)
    try:
        host.rewrite(nxt)
        time.sleep(1.5)  # 30 polls, three of them full listings
        assert snapshot(mnt) == before
    finally:
        feed(pid)
    eventually(lambda: hg.TAG_C not in os.listdir(mnt), what="TAG_C to go after the fault")
    assert {hg.TAG_A, hg.TAG_B} <= set(os.listdir(mnt))


def test_device_events_out_of_descriptors_change_nothing(make_host, tagmemfs, tmp_path, udev):
    host = make_host("mixed")
    d = start(tagmemfs, tmp_path, uevents="udev")
    mnt = d.mount_point
    before = snapshot(mnt)
    pid = d.proc.pid
    starve(pid, 0)
    try:
        # Events for every device: each is re-read, and each read fails.
        for dev in host.host.devices.values():
            udev.send("change", "/" + dev.sysfs_dir, "dax")
        # Heard (or lost to EMFILE inside libudev, which asks for a rescan).
        eventually(lambda: "uevent change dax" in d.text() or "events were lost" in d.text(),
                   what="the events")
        time.sleep(0.5)
        assert snapshot(mnt) == before
    finally:
        feed(pid)
    eventually(lambda: "reads of the host succeed again" in d.text(), what="the retry")
    assert snapshot(mnt) == before


def nodes_dir(d) -> Path:
    return Path(str(d.mount_point) + ".nodes")


def test_unchanged_nodes_are_not_made_again(make_host, tagmemfs, tmp_path):
    make_host("mixed")
    d = start(tagmemfs, tmp_path)
    nodes = nodes_dir(d)
    before = {n: os.stat(nodes / n).st_ino for n in os.listdir(nodes)}
    assert hg.TAG_A in before and TAG_HMEM in before
    d.rescan()
    after = {n: os.stat(nodes / n).st_ino for n in os.listdir(nodes)}
    assert after == before


def test_a_node_that_cannot_be_made_makes_its_tag_not_ready(make_host, tagmemfs, tmp_path):
    make_host("mixed")
    d = start(tagmemfs, tmp_path)
    mnt, nodes = d.mount_point, nodes_dir(d)
    assert (mnt / hg.TAG_A / "data").exists()
    # Under the read-only bind lies the daemon's writable tmpfs: put
    # directories where the node and its replacement would go.
    subprocess.run(["umount", "-l", str(nodes)], check=True)
    (nodes / hg.TAG_A).unlink()
    (nodes / hg.TAG_A).mkdir()
    (nodes / f".{hg.TAG_A}.new").mkdir()
    d.rescan()  # republishes every tag
    eventually(lambda: '"no-node"' in (mnt / hg.TAG_A / "metadata").read_text(),
               what="TAG_A to be shown without a node")
    meta = (mnt / hg.TAG_A / "metadata").read_text()
    assert "cannot be made" in meta
    assert not (mnt / hg.TAG_A / "data").exists()
    assert not os.path.lexists(mnt / hg.TAG_A / "data")
    assert '"ready"' in (mnt / hg.TAG_B / "metadata").read_text()
    # Once it can be made, the retry makes it and the tag is ready again.
    (nodes / f".{hg.TAG_A}.new").rmdir()
    (nodes / hg.TAG_A).rmdir()
    eventually(lambda: '"ready"' in (mnt / hg.TAG_A / "metadata").read_text(),
               what="TAG_A to be ready again")
    assert (nodes / hg.TAG_A).is_char_device()
    assert (mnt / hg.TAG_A / "data").exists()


def test_lost_device_events_cause_a_full_rescan(make_host, tagmemfs, tmp_path, udev):
    host = make_host("mixed")
    d = start(tagmemfs, tmp_path, uevents="udev")
    mnt = d.mount_point
    assert hg.TAG_NV0 in os.listdir(mnt)
    # While the daemon is stopped, the NVDIMM namespaces go without an event
    # (as if it was lost), and a flood of events overflows its socket.
    d.proc.send_signal(signal.SIGSTOP)
    try:
        host.rewrite(_without_b())
        for i in range(FLOOD):
            udev.send("change", f"/devices/nowhere/dax9.{i}", "dax")
    finally:
        d.proc.send_signal(signal.SIGCONT)
    eventually(lambda: hg.TAG_NV0 not in os.listdir(mnt), what="the rescan")
    assert set(os.listdir(mnt)) == {hg.TAG_A, hg.TAG_C, TAG_HMEM}
    assert "device events were lost" in d.text()


def traced_env() -> dict:
    """LeakSanitizer cannot work under ptrace (strace): under ASan the traced
    daemon runs without leak checking, every other check still on."""
    env = dict(os.environ)
    if "ASAN_OPTIONS" in env:
        env["ASAN_OPTIONS"] += ":detect_leaks=0"
    return env


def test_a_node_is_never_more_open_than_its_final_mode(make_host, tmp_path):
    """The node of a tag for user 65534 with mode 0060 (its group only):
    made with no access at all, then given its owner, then its mode. Made
    0600 first, it would be open to its owner between chown and chmod."""
    make_host("mixed")
    conf = write_config(tmp_path, f"[tag {TAG_HMEM}]\nmatch-range = 0x3000000000-0x31ffffffff\n"
                                  "owner = 65534\ngroup = 65534\nmode = 0060\n")
    mnt = Path(tempfile.mkdtemp(prefix="tagmem-faults-", dir="/tmp"))
    trace = tmp_path / "trace"
    log = open(tmp_path / "tagmemfs.log", "w")
    proc = subprocess.Popen(["strace", "-f", "-qq", "-s", "64", "-o", str(trace), "-e",
                             "trace=mknodat,fchownat,fchmodat,renameat", str(TAGMEMFS), "-f",
                             # No CDI spec: its file names carry the tag too.
                             "--no-cdi", "--config", str(conf), "--uevents", "none", str(mnt)],
                            stdout=log, stderr=subprocess.STDOUT, env=traced_env())
    try:
        eventually(lambda: " mounted " in (tmp_path / "tagmemfs.log").read_text(),
                   what="the mount")
        st = os.stat(Path(str(mnt) + ".nodes") / TAG_HMEM)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (65534, 65534, 0o060)
    finally:
        # tagmemfs is strace's child: stopped itself, strace follows.
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        for child in children:
            os.kill(int(child), signal.SIGTERM)
        proc.wait(30)
        log.close()
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    calls = [line.split(None, 1)[1] for line in trace.read_text().splitlines()
             if TAG_HMEM in line and "resumed" not in line]
    assert len(calls) == 3, calls
    assert calls[0].startswith("mknodat(") and "S_IFCHR|000," in calls[0], calls
    assert calls[1].startswith("fchownat(") and "65534, 65534" in calls[1], calls
    assert calls[2].startswith("fchmodat(") and ", 060" in calls[2], calls


def fuse_workers(pid: int) -> list[str]:
    """The daemon's threads but its event thread: the main thread and
    libfuse's workers, which answer the kernel's requests."""
    return [tid for tid in os.listdir(f"/proc/{pid}/task")
            if Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip() != "tagmem-events"]


def traced_by(tid: str, pid: int) -> int:
    status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("TracerPid:")))


def test_a_change_racing_a_lookup_reaches_the_new_inode(make_host, tagmemfs, tmp_path):
    """The race behind the soak's truncated `metadata` (docs/soak.md): a
    LOOKUP is answered from the old record, the tag changes, and the
    change's inode invalidation reaches the kernel before the reply has
    created the inode. Made certain here by holding every reply of the FUSE
    workers (strace delays their writev) while the event thread, untraced,
    applies the change. Without a barrier the inode is created afterwards
    with the old size for a day, and reads stop there: cut JSON."""
    if shutil.which("strace") is None:
        pytest.fail("strace is missing (scripts/install-deps.sh installs it)")
    make_host("dcd")
    conf = write_config(tmp_path, f"[tag {hg.TAG_A}]\nname = short\n")
    # One FUSE worker, so that no untraced one is started later (strace
    # without -f: with it, attaching one thread attaches the event thread).
    d = tagmemfs("-c", conf, "--uevents", "none", "--threads", "1")
    tag_dir = d.mount_point / hg.TAG_A
    os.stat(tag_dir)  # the directory is known to the kernel, its files not yet
    delay_s = 1.5
    workers = fuse_workers(d.proc.pid)
    tracer = subprocess.Popen(
        ["strace", "-qq", "-o", "/dev/null", "-e", "trace=writev", "-e",
         f"inject=writev:delay_enter={int(delay_s * 1e6)}"]
        + [arg for tid in workers for arg in ("-p", tid)], env=traced_env())
    try:
        eventually(lambda: all(traced_by(t, d.proc.pid) == tracer.pid for t in workers),
                   what="strace attached to every FUSE worker")
        got: dict[str, str] = {}
        reader = threading.Thread(
            target=lambda: got.setdefault("text", (tag_dir / "metadata").read_text()))
        reader.start()
        # The LOOKUP of `metadata` is answered at once; its reply now waits
        # in writev. The change happens in that window.
        time.sleep(delay_s / 3)
        long_name = "a-much-longer-name-" * 6  # within the 128-byte limit
        conf.write_text(f"[tag {hg.TAG_A}]\nname = {long_name}\n")
        d.rescan()
        reader.join(timeout=60)
        assert not reader.is_alive(), "the read of metadata never returned"
    finally:
        tracer.terminate()  # detaches; the daemon runs on untraced
        tracer.wait(30)
    # The reader's own view may be of before or after the change, but whole.
    # Cut at the old length, it is not JSON.
    first = json.loads(got["text"])
    assert first["name"] in ("short", long_name)
    # And from now on every read sees the change, size and content.
    now = (tag_dir / "metadata").read_text()
    assert json.loads(now)["name"] == long_name, now
    assert os.stat(tag_dir / "metadata").st_size == len(now.encode())


FAULT_SHIM = TAGMEMFS.parents[1] / "tests" / "libfault_shim.so"


@pytest.mark.parametrize("fault,says", [
    ("eventfd=1", "cannot make the rescan eventfd: Too many open files"),
    ("eventfd=2", "cannot make the stop eventfd: Too many open files"),
    ("eventfd=3", "cannot make the stop request eventfd: Too many open files"),
    (f"sigaction={int(signal.SIGHUP)}", "cannot handle SIGHUP: Invalid argument"),
    (f"sigaction={int(signal.SIGTERM)}", "cannot handle SIGTERM: Invalid argument"),
])
def test_a_failed_eventfd_or_sigaction_stops_startup_cleanly(make_host, tmp_path, fault, says):
    """Issue 19: unchecked, a failed eventfd left a daemon that served but
    could never be stopped (its event thread waited on nothing, and the exit
    joined it forever); a failed sigaction left SIGTERM to kill it with its
    mount left behind, or SIGHUP unheard. Now it says why and mounts nothing."""
    make_host("dcd")
    mp = tmp_path / "mnt"
    env = {**preload_env(FAULT_SHIM), "TAGMEM_FAULT": fault}
    p = subprocess.Popen([str(TAGMEMFS), "-f", "--no-cdi", "--uevents", "none", str(mp)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        out, _ = p.communicate(timeout=60)  # a bound for a hang, not a timing
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        subprocess.run(["umount", "-l", str(mp)], capture_output=True)
        pytest.fail(f"tagmemfs served on despite TAGMEM_FAULT={fault}:\n{out}")
    assert p.returncode == 1, out
    assert f"{says}; not mounting" in out
    assert mount_options(mp) is None
    assert mount_options(Path(f"{mp}.nodes")) is None
