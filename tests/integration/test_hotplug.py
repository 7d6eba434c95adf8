# SPDX-License-Identifier: Apache-2.0
"""Hotplug on synthetic hosts: the real libudev monitor of tagmemfs hears
udev-format events (sent by uevent.py in a private network namespace), DCD
extents are polled, and programs wait and watch through the socket."""
from __future__ import annotations

import functools
import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path

import hostgen as hg
import pytest
import conftest
from conftest import TAGMEM, run_as, run_tagmem

GiB, MiB = hg.GiB, hg.MiB
TAG_X = "7e570000-0000-4000-8000-0000000000e1"
NOBODY = 65534


def devpath(dev) -> str:
    return "/" + dev.sysfs_dir


def plug(udev, path: str) -> None:
    """What the kernel sends for a new dax device: "add", then "bind" once
    device_dax's probe has made it usable."""
    udev.send("add", path, "dax")
    udev.send("bind", path, "dax", DRIVER="device_dax")


eventually = functools.partial(conftest.eventually, pause=0.005, ignore=OSError)


class Watcher:
    """`tagmem watch --json` in the background, its lines after the snapshot in a queue."""

    def __init__(self, socket_path: Path, uid: int | None = None):
        argv = [str(TAGMEM), "watch", "--json", "--snapshot", "--socket", str(socket_path)]
        if uid is not None:
            argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        # Registered before the changes start: the daemon sends the snapshot
        # only once the watcher is registered, so every change after
        # snapshot-end reaches it as an event. (A fixed sleep was not enough
        # on a loaded machine: a change made before the watcher registered
        # went into its snapshot, and take() timed out.)
        deadline = time.monotonic() + 60
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("tagmem watch sent no snapshot-end")
            if self.lines.get(timeout=left).get("event") == "snapshot-end":
                break

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def take(self, n: int, timeout=20.0) -> list[dict]:
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"watch got {len(out)} of {n} events: {out[-5:]}")
            out.append(self.lines.get(timeout=left))
        return out

    def quiet(self, seconds=0.5) -> list[dict]:
        time.sleep(seconds)
        out = []
        while not self.lines.empty():
            out.append(self.lines.get())
        return out

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def dcd_host(claim_c=False, extra_extent_tag=None, drop_b=False) -> tuple[hg.Host, dict]:
    """The dcd scenario, optionally with TAG_C claimed by dax0.4, with an
    extra offered extent, or with TAG_B released."""
    h = hg.Host()
    h.node(1, **hg.CXL_NODE_PERF)
    r = h.dcd_region(region_id=0, base=0x10_0000_0000, size=16 * GiB)
    # Explicit indices: an extent keeps its name while it lives.
    r.extent(offset=0, length=GiB, uuid=hg.TAG_A, index=0)
    if not drop_b:
        r.extent(offset=GiB, length=256 * MiB, uuid=hg.TAG_B, index=1)
    r.extent(offset=2 * GiB, length=512 * MiB, uuid=hg.TAG_A, index=2)
    r.extent(offset=4 * GiB, length=GiB, uuid=hg.TAG_C, index=4)
    if extra_extent_tag:
        r.extent(offset=6 * GiB, length=GiB, uuid=extra_extent_tag, index=5)
    devs = {"a": r.dax(dev_id=0, uuid=hg.TAG_A)}
    if not drop_b:
        devs["b"] = r.dax(dev_id=1, uuid=hg.TAG_B)
    if claim_c:
        devs["c"] = r.dax(dev_id=4, uuid=hg.TAG_C)
    return h, devs


def start(tagmemfs, *extra):
    d = tagmemfs("--uevents", "udev", "--extent-poll-ms", "50", *extra)
    d.socket = Path(str(d.mount_point) + ".sock")
    return d


def test_a_device_added_by_uevent_appears_at_once(make_host, tagmemfs, udev):
    host = make_host(dcd_host()[0])
    d = start(tagmemfs)
    mnt = d.mount_point
    assert not (mnt / hg.TAG_C / "data").exists()  # offered: cached negative entry
    w = Watcher(d.socket)
    nxt, devs = dcd_host(claim_c=True)
    host.rewrite(nxt)
    plug(udev, devpath(devs["c"]))
    eventually(lambda: (mnt / hg.TAG_C / "data").exists(), what="TAG_C data")
    assert os.readlink(mnt / hg.TAG_C / "dev") == "/dev/dax0.4"
    [ev] = w.take(1)
    assert (ev["event"], ev["tag"], ev["device"], ev["state"]) == ("changed", hg.TAG_C,
                                                                    "dax0.4", "ready")
    assert w.quiet() == []  # each change once, nothing for the other tags
    # The per-device reader agrees with libdaxctl's full scan.
    meta = json.loads((mnt / hg.TAG_C / "metadata").read_text())
    shown = json.loads(run_tagmem("show", "--json", hg.TAG_C).stdout)
    for dev in shown["devices"]:
        del dev["ranges"]  # root-only: metadata leaves them out
    assert meta == shown
    w.stop()


def test_a_removed_device_vanishes(make_host, tagmemfs, udev):
    host = make_host(dcd_host()[0])
    d = start(tagmemfs)
    mnt = d.mount_point
    assert (mnt / hg.TAG_B / "data").exists()
    w = Watcher(d.socket)
    old_b = dcd_host()[1]["b"]
    host.rewrite(dcd_host(drop_b=True)[0])
    udev.send("remove", devpath(old_b), "dax")
    eventually(lambda: not (mnt / hg.TAG_B).exists(), what="TAG_B gone")
    assert hg.TAG_B not in os.listdir(mnt)
    events = [(e["event"], e["tag"]) for e in w.take(1)]
    assert events == [("removed", hg.TAG_B)]
    # The extent went with it: nothing is left offered either.
    assert w.quiet(0.3) == []
    w.stop()


def test_extents_arriving_and_leaving_are_polled(make_host, tagmemfs):
    host = make_host(dcd_host()[0])
    d = start(tagmemfs)
    mnt = d.mount_point
    w = Watcher(d.socket)
    host.rewrite(dcd_host(extra_extent_tag=TAG_X)[0])
    eventually(lambda: (mnt / TAG_X / "metadata").exists(), what="offered TAG_X")
    meta = json.loads((mnt / TAG_X / "metadata").read_text())
    assert meta["state"] == "offered" and meta["extents"][0]["offset"] == 6 * GiB
    assert sorted(os.listdir(mnt / TAG_X)) == ["metadata", "shareable"]
    host.rewrite(dcd_host()[0])
    eventually(lambda: not (mnt / TAG_X).exists(), what="TAG_X released")
    assert [(e["event"], e["tag"], e["state"]) for e in w.take(2)] == [
        ("added", TAG_X, "offered"), ("removed", TAG_X, "offered")]
    assert w.quiet() == []
    w.stop()


def test_wait_returns_when_the_tag_becomes_usable(make_host, tagmemfs, udev):
    host = make_host(dcd_host()[0])
    d = start(tagmemfs)
    waiter = subprocess.Popen([str(TAGMEM), "wait", hg.TAG_C, "--timeout", "30", "--socket",
                               str(d.socket)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    time.sleep(0.3)
    assert waiter.poll() is None  # offered is not usable: still waiting
    nxt, devs = dcd_host(claim_c=True)
    host.rewrite(nxt)
    plug(udev, devpath(devs["c"]))
    out, err = waiter.communicate(timeout=20)
    assert waiter.returncode == 0, err
    path = Path(out.strip())
    assert path == d.mount_point / hg.TAG_C / "data" and path.exists()


def test_wait_for_a_usable_tag_returns_immediately(make_host, tagmemfs):
    make_host(dcd_host()[0])
    d = start(tagmemfs)
    t0 = time.monotonic()
    r = run_tagmem("wait", hg.TAG_A, "--timeout", "10", "--socket", d.socket)
    assert r.returncode == 0 and r.stdout == f"{d.mount_point / hg.TAG_A / 'data'}\n"
    assert time.monotonic() - t0 < 5


def test_wait_times_out_with_code_6(make_host, tagmemfs):
    make_host(dcd_host()[0])
    d = start(tagmemfs)
    r = run_tagmem("wait", TAG_X, "--timeout", "0.3", "--socket", d.socket)
    assert r.returncode == 6 and "did not become usable" in r.stderr


def test_wait_and_watch_errors(make_host, tagmemfs, tmp_path):
    make_host(dcd_host()[0])
    r = run_tagmem("wait", hg.TAG_A, "--timeout", "1", "--socket", tmp_path / "none.sock")
    assert r.returncode == 1 and "is it running" in r.stderr
    r = run_tagmem("wait", "not-a-tag", "--socket", tmp_path / "none.sock")
    assert r.returncode == 2
    r = run_tagmem("wait", hg.TAG_A, "--timeout", "-1")
    assert r.returncode == 2
    d = start(tagmemfs)
    # Hostile requests get an error line and a closed connection; the daemon lives on.
    import socket as so
    for bad in (b"garbage\n", b'{"op":"format-disk"}\n', b'{"op":"wait","tag":"x"}\n',
                b"[1,2]\n", b'{"op": 5}\n'):
        c = so.socket(so.AF_UNIX, so.SOCK_STREAM)
        c.connect(str(d.socket))
        c.sendall(bad)
        c.settimeout(5)
        reply = c.recv(4096)
        assert b'"error"' in reply, (bad, reply)
        assert c.recv(4096) == b""
        c.close()
    c = so.socket(so.AF_UNIX, so.SOCK_STREAM)
    c.connect(str(d.socket))
    c.sendall(b"x" * 10000)  # an endless request line is cut off, with an error line
    c.settimeout(5)
    try:
        reply = c.recv(4096)
        assert reply == b"" or (b'"error"' in reply and c.recv(4096) == b""), reply
    except ConnectionResetError:
        pass  # closed with our bytes unread: a reset, just as good
    assert run_tagmem("wait", hg.TAG_A, "--timeout", "5", "--socket", d.socket).returncode == 0


def test_watchers_learn_only_of_tags_they_may_open(make_host, tagmemfs, udev, tmp_path):
    host = make_host(dcd_host()[0])
    conf = tmp_path / "tagmem.conf"
    conf.write_text(f"[tag {hg.TAG_C}]\nowner = {NOBODY}\n")
    d = start(tagmemfs, "-c", conf)
    root_w = Watcher(d.socket)
    nobody_w = Watcher(d.socket, uid=NOBODY)
    nxt, devs = dcd_host(claim_c=True, drop_b=True)
    host.rewrite(nxt)
    plug(udev, devpath(devs["c"]))
    udev.send("remove", devpath(dcd_host()[1]["b"]), "dax")
    got_root = {(e["event"], e["tag"]) for e in root_w.take(2)}
    assert got_root == {("changed", hg.TAG_C), ("removed", hg.TAG_B)}
    assert [(e["event"], e["tag"]) for e in nobody_w.take(1)] == [("changed", hg.TAG_C)]
    assert nobody_w.quiet() == []
    # wait never confirms a tag the user may not open.
    r = run_as(NOBODY, NOBODY, f"""
import subprocess, sys
r = subprocess.run([{str(TAGMEM)!r}, "wait", {hg.TAG_A!r}, "--timeout", "0.5", "--socket",
                    {str(d.socket)!r}])
sys.exit(r.returncode)
""")
    assert r.returncode == 6
    root_w.stop()
    nobody_w.stop()


def test_events_for_vanished_or_bogus_devices_change_nothing(make_host, tagmemfs, udev):
    host = make_host(dcd_host()[0])
    d = start(tagmemfs)
    before = sorted(os.listdir(d.mount_point))
    w = Watcher(d.socket)
    udev.send("add", "/devices/platform/ACPI0017:00/root0/decoder0.0/region0/dax_region0/dax0.9",
              "dax")  # announced, but gone before it was read
    udev.send("change", "/devices/nowhere/dax7", "dax")  # not even a dax device name
    udev.send("add", "/devices/LNXSYSTM:00/ndbus0/region9/namespace9.0", "nd")
    # A device that vanishes mid-read: the bus link dangles.
    hg.set_attr(host.root, "bus/dax/devices/dax0.1", hg.Symlink("../../../devices/gone"))
    udev.send("change", devpath(dcd_host()[1]["b"]), "dax")
    # dax0.1 is gone; its extent still carries TAG_B, which is now offered.
    eventually(lambda: not (d.mount_point / hg.TAG_B / "data").exists(), what="TAG_B data gone")
    assert sorted(os.listdir(d.mount_point)) == before
    assert sorted(os.listdir(d.mount_point / hg.TAG_B)) == ["metadata", "shareable"]
    assert [(e["event"], e["tag"], e["state"]) for e in w.take(1)] == [
        ("changed", hg.TAG_B, "offered")]
    assert w.quiet() == []
    assert d.proc.poll() is None
    w.stop()


def test_a_replaced_tag_is_whole_as_soon_as_it_is_seen_changed(make_host, tagmemfs, udev):
    """A tag whose device comes and goes is replaced by new inodes. Whoever
    sees the change (data gone, or back) and then lists the tag sees the new
    tag whole, never an empty directory: the old directory, which the kernel
    still reaches by name until the daemon has told it, must stay the old tag
    until then. (The flake this pins failed one run in three under load.)"""
    host = make_host(dcd_host()[0])
    d = start(tagmemfs)
    b = d.mount_point / hg.TAG_B
    link = "bus/dax/devices/dax0.1"
    target = os.readlink(Path(host.root) / "sys" / link)
    change = devpath(dcd_host()[1]["b"])
    ready = ["data", "dev", "metadata", "shareable", "size"]
    bad = []
    for i in range(50):
        for present, content in ((False, hg.Symlink("../../../devices/gone")),
                                 (True, hg.Symlink(target))):
            hg.set_attr(host.root, link, content)
            udev.send("change", change, "dax")
            # No sleep between polls: the window is the daemon's, not ours.
            deadline = time.monotonic() + 10
            while (b / "data").exists() != present:
                assert time.monotonic() < deadline, f"round {i}: data never {present}"
            try:
                got = sorted(os.listdir(b))
            except OSError as e:  # the old directory, dead before the kernel knew
                got = e.strerror
            if got != (ready if present else ["metadata", "shareable"]):
                bad.append((i, present, got))
    assert bad == []
    assert d.proc.poll() is None


def test_a_mapping_holder_of_one_tag_is_not_disturbed(make_host, tagmemfs, udev):
    """Changes to other tags never touch an open tag: its inode stays the same."""
    host = make_host(dcd_host()[0])
    d = start(tagmemfs)
    a = d.mount_point / hg.TAG_A
    fd = os.open(a, os.O_RDONLY | os.O_DIRECTORY)
    ino = os.stat(a / "data").st_ino
    nxt, devs = dcd_host(claim_c=True, drop_b=True)
    host.rewrite(nxt)
    plug(udev, devpath(devs["c"]))
    udev.send("remove", devpath(dcd_host()[1]["b"]), "dax")
    eventually(lambda: (d.mount_point / hg.TAG_C / "data").exists())
    assert os.stat("data", dir_fd=fd).st_ino == ino
    assert os.stat(a / "data").st_ino == ino
    os.close(fd)


def test_a_burst_of_changes_with_readers_traversing(make_host, tagmemfs, udev):
    n = 1500
    host = make_host(hg.many(n))
    d = start(tagmemfs)
    mnt = d.mount_point
    assert len(os.listdir(mnt)) == n
    w = Watcher(d.socket)
    # Next: the first half of the devices released, as many new ones added.
    nxt = hg.Host()
    region = nxt.dcd_region(region_id=0, base=1 << 44, size=2 * n * hg.SCALE_DEVICE_SIZE)
    keep = range(n // 2, n)
    new = range(n, n + n // 2)
    for i in (*keep, *new):
        tag = hg.scale_tag(i)
        region.extent(offset=i * hg.SCALE_DEVICE_SIZE, length=hg.SCALE_DEVICE_SIZE, uuid=tag,
                      index=i)
        region.dax(dev_id=i, uuid=tag)
    host.rewrite(nxt)

    stop = threading.Event()
    errors: list[str] = []

    def reader():
        while not stop.is_set():
            try:
                for name in os.listdir(mnt)[:200]:
                    try:
                        os.stat(mnt / name / "metadata")
                    except FileNotFoundError:
                        pass  # removed meanwhile: fine
            except Exception as e:  # noqa: BLE001 - any crash of the mount is a failure
                errors.append(repr(e))

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    base = "/devices/platform/ACPI0017:00/root0/decoder0.0/region0/dax_region0"
    for i in range(n // 2):
        udev.send("remove", f"{base}/dax0.{i}", "dax")
    for i in new:
        plug(udev, f"{base}/dax0.{i}")
    # Every removed tag ends "removed"; every new tag is "added", then (when
    # its extent was seen before its device, as DCD offers before a device
    # claims) "changed" to ready. Nothing else, and nothing twice.
    gone = {hg.scale_tag(i) for i in range(n // 2)}
    born = {hg.scale_tag(i) for i in new}
    last: dict[str, dict] = {}
    seen: list[tuple] = []
    deadline = time.monotonic() + 60
    while not (gone <= {t for t, e in last.items() if e["event"] == "removed"}
               and born <= {t for t, e in last.items() if e["state"] == "ready"
                            and e["event"] != "removed"}):
        assert time.monotonic() < deadline, f"watch stalled after {len(seen)} events"
        [e] = w.take(1, timeout=max(0.1, deadline - time.monotonic()))
        last[e["tag"]] = e
        seen.append((e["event"], e["tag"], e["state"]))
    seen += [(e["event"], e["tag"], e["state"]) for e in w.quiet()]
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    assert {t for _, t, _ in seen} == gone | born  # no event for an untouched tag
    assert len(seen) == len(set(seen))  # each change once
    assert {(ev, st) for ev, t, st in seen if t in born} <= {("added", "offered"),
                                                             ("added", "ready"),
                                                             ("changed", "ready")}
    expected = sorted(hg.scale_tag(i) for i in (*keep, *new))
    assert sorted(os.listdir(mnt)) == expected
    listed = json.loads(run_tagmem("list", "--json").stdout)
    assert sorted(t["tag"] for t in listed["tags"]) == expected
    for tag in expected[:: max(1, n // 50)]:
        assert os.path.exists(mnt / tag / "data")
    assert d.proc.poll() is None
    w.stop()


def test_stats_count_requests_and_are_for_root(make_host, tagmemfs):
    import socket as so
    make_host(dcd_host()[0])
    d = start(tagmemfs)

    def stats():
        c = so.socket(so.AF_UNIX, so.SOCK_STREAM)
        c.connect(str(d.socket))
        c.sendall(b'{"op":"stats"}\n')
        c.settimeout(5)
        data = b""
        while chunk := c.recv(65536):
            data += chunk
        return json.loads(data)

    before = stats()
    assert before["tags"] == 3
    assert not (d.mount_point / "12345678-0000-4000-8000-000000000000").exists()
    assert not (d.mount_point / "12345678-0000-4000-8000-000000000000").exists()  # cached miss
    after = stats()
    assert after["requests"]["lookup"] == before["requests"]["lookup"] + 1
    r = run_as(NOBODY, NOBODY, f"""
import socket
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
c.connect({str(d.socket)!r})
c.sendall(b'{{"op":"stats"}}\\n')
print(c.recv(4096).decode())
""")
    assert "stats are for root" in r.stdout


def test_a_device_is_published_at_its_bind_not_its_add(make_host, tagmemfs, udev):
    """The driver link exists while device_dax is still probing; only the
    bind event says the node can be opened."""
    host = make_host(dcd_host()[0])
    d = start(tagmemfs)
    w = Watcher(d.socket)
    nxt, devs = dcd_host(claim_c=True)
    host.rewrite(nxt)
    udev.send("add", devpath(devs["c"]), "dax")
    time.sleep(0.5)
    assert not (d.mount_point / hg.TAG_C / "data").exists()
    assert w.quiet(0.1) == []
    udev.send("bind", devpath(devs["c"]), "dax", DRIVER="device_dax")
    eventually(lambda: (d.mount_point / hg.TAG_C / "data").exists(), what="TAG_C at bind")
    assert [(e["event"], e["state"]) for e in w.take(1)] == [("changed", "ready")]
    w.stop()
