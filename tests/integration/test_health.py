# SPDX-License-Identifier: Apache-2.0
"""Memory errors reach the tag's users (issue 13, docs/health.md), on a
synthetic host: the NVDIMM region's `badblocks` (512-byte sectors relative to
the region) is rewritten by hand and the daemon is told by a rescan (SIGHUP):
a plain file cannot raise the kernel's sysfs notification, which the QEMU
test (tests/qemu/test_health_real.py) covers on a real kernel.

Region 1 of the "nvdimm" scenario holds namespace1.0 (TAG_NV0) and
namespace1.1 (TAG_NV1), 4 GiB each, whose data start 2 MiB (the info block)
into the namespace."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import hostgen as hg
import tracebuf as tb
from conftest import TAGMEM, eventually, run_as, run_tagmem

SECTOR = 512
REGION_BASE = 0x20_0000_0000
NS_SIZE = 4 * hg.GiB
DATA_OFFSET = hg.NVDIMM_DATA_OFFSET
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def sector_of(ns_id: int, data_offset: int) -> int:
    """The region sector holding byte `data_offset` of namespace1.<ns_id>'s data."""
    return (ns_id * NS_SIZE + DATA_OFFSET + data_offset) // SECTOR


class Watcher:
    """A raw watch-socket client: the snapshot, then every line as it comes."""

    def __init__(self, mnt: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(f"{mnt}.sock")
        self.sock.sendall(b'{"op":"watch"}\n')
        self.buf = b""
        self.lines: list[dict] = []
        self.pos = 0  # lines before this one were looked at by a wait_for
        self.wait_for(lambda j: j["event"] == "snapshot-end")

    def wait_for(self, pred, timeout=10.0, start: int | None = None) -> dict:
        """The next line after the last one found (or from line `start`)
        that matches."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(self.pos if start is None else start, len(self.lines)):
                if pred(self.lines[i]):
                    self.pos = i + 1
                    return self.lines[i]
            left = deadline - time.monotonic()
            assert left > 0, f"no such line within {timeout}s; got {self.lines}"
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            assert chunk, f"the daemon closed the watch; got {self.lines}"
            self.buf += chunk
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                self.lines.append(json.loads(line))

    def close(self):
        self.sock.close()


def metadata(mnt: Path, tag: str) -> dict:
    return json.loads((mnt / tag / "metadata").read_text())


def set_badblocks(host, text: str) -> None:
    (host.sys / "bus/nd/devices/region1/badblocks").write_text(text)


def test_a_bad_range_degrades_the_right_tag_at_the_right_offset(make_host, tagmemfs):
    host = make_host("nvdimm")
    d = tagmemfs("--uevents", "none")
    mnt = d.mount_point
    for tag in (hg.TAG_NV0, hg.TAG_NV1):
        assert metadata(mnt, tag)["health"] == {"status": "ok", "bad_ranges": []}
    w = Watcher(mnt)
    try:
        # 4 KiB at 5 MiB + 4 KiB into TAG_NV1's data.
        offset = 5 * hg.MiB + 4096
        set_badblocks(host, f"{sector_of(1, offset)} 8\n")
        d.rescan()
        ev = w.wait_for(lambda j: j["event"] == "health")
        assert ev["tag"] == hg.TAG_NV1 and ev["health"] == "degraded"
        assert ev["device"] == "dax1.1" and ev["state"] == "ready"
        assert [(b["offset"], b["length"]) for b in ev["bad_ranges"]] == [(offset, 4096)]
        health = metadata(mnt, hg.TAG_NV1)["health"]
        assert health["status"] == "degraded"
        assert [(b["offset"], b["length"]) for b in health["bad_ranges"]] == [(offset, 4096)]
        first_seen = health["bad_ranges"][0]["first_seen"]
        assert ISO.match(first_seen), first_seen
        assert metadata(mnt, hg.TAG_NV0)["health"]["status"] == "ok"
        # The same range after another rescan: no event, first seen kept.
        time.sleep(1.1)
        d.rescan()
        assert metadata(mnt, hg.TAG_NV1)["health"]["bad_ranges"][0]["first_seen"] == first_seen

        # A range across the namespace boundary: the last 512 bytes of
        # TAG_NV0's data, namespace1.1's info block, TAG_NV1's first 512.
        straddle = sector_of(0, NS_SIZE - DATA_OFFSET - SECTOR)
        set_badblocks(host, f"{straddle} {(DATA_OFFSET + 2 * SECTOR) // SECTOR}\n"
                            f"{sector_of(1, offset)} 8\n")
        mark = w.pos
        d.rescan()
        # One event each, in no promised order.
        ev0 = w.wait_for(lambda j: j["event"] == "health" and j["tag"] == hg.TAG_NV0, start=mark)
        assert [(b["offset"], b["length"]) for b in ev0["bad_ranges"]] == \
            [(NS_SIZE - DATA_OFFSET - SECTOR, SECTOR)]
        ev1 = w.wait_for(lambda j: j["event"] == "health" and j["tag"] == hg.TAG_NV1, start=mark)
        ranges1 = [(b["offset"], b["length"]) for b in ev1["bad_ranges"]]
        assert ranges1 == [(0, SECTOR), (offset, 4096)]
        # The old range kept its first sighting.
        assert ev1["bad_ranges"][1]["first_seen"] == first_seen

        # Users see offsets only: no physical address in what anyone reads.
        text = (mnt / hg.TAG_NV1 / "metadata").read_text()
        phys = REGION_BASE + NS_SIZE + DATA_OFFSET + offset
        assert str(phys) not in text and f"{phys:x}" not in text
        r = run_as(65534, 65534, f"print(open('{mnt}/{hg.TAG_NV1}/metadata').read())")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["health"]["status"] == "degraded"
        assert "ranges" not in json.loads(r.stdout)["devices"][0]

        # tagmem show, and wait --degraded at once for a degraded tag.
        shown = run_tagmem("show", hg.TAG_NV1, "-m", mnt)
        assert shown.returncode == 0, shown.stderr
        assert re.search(r"^health: +degraded$", shown.stdout, re.M), shown.stdout
        assert f"offset {offset:#x}, 4096 bytes, first seen {first_seen}" in shown.stdout
        r = run_tagmem("wait", "--degraded", hg.TAG_NV1, "-m", mnt, "--timeout", "10")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["tag"] == hg.TAG_NV1 and out["health"] == "degraded"
        assert [(b["offset"], b["length"]) for b in out["bad_ranges"]] == ranges1

        # A read that fails (malformed text) keeps the last known health.
        set_badblocks(host, "12 x\n")
        d.rescan()
        assert "badblocks line 1" in d.text()
        assert metadata(mnt, hg.TAG_NV1)["health"]["status"] == "degraded"

        # A waiter for the next change, then the ranges go: ok again.
        waiter = subprocess.Popen([str(TAGMEM), "wait", "--health-change", hg.TAG_NV1, "-m",
                                   str(mnt), "--timeout", "30"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)  # its request reaches the daemon before the change
        set_badblocks(host, "")
        d.rescan()
        out, err = waiter.communicate(timeout=30)
        assert waiter.returncode == 0, err
        assert json.loads(out) == {"tag": hg.TAG_NV1, "health": "ok", "bad_ranges": []}
        ev = w.wait_for(lambda j: j["event"] == "health" and j["tag"] == hg.TAG_NV1
                        and j["health"] == "ok")
        assert ev["bad_ranges"] == []
        for tag in (hg.TAG_NV0, hg.TAG_NV1):
            eventually(lambda t=tag: metadata(mnt, t)["health"]["status"] == "ok")
        # Every event was a health event: the devices never changed.
        assert {j["event"] for j in w.lines} == {"exists", "snapshot-end", "health"}
    finally:
        w.close()


def test_wait_degraded_times_out_and_refuses_bad_usage(make_host, tagmemfs):
    make_host("nvdimm")
    d = tagmemfs("--uevents", "none")
    r = run_tagmem("wait", "--degraded", hg.TAG_NV0, "-m", d.mount_point, "--timeout", "1")
    assert r.returncode == 6, (r.returncode, r.stdout, r.stderr)
    assert "did not degrade" in r.stderr
    r = run_tagmem("wait", "--degraded", "--health-change", hg.TAG_NV0, "-m", d.mount_point)
    assert r.returncode == 2, (r.returncode, r.stderr)
    r = run_tagmem("wait", "--degraded", "not-a-uuid", "-m", d.mount_point)
    assert r.returncode == 2, (r.returncode, r.stderr)


def test_a_badblocks_list_past_a_page_is_incomplete_not_ok(make_host, tagmemfs):
    """Issue 19, item 2: the kernel shows at most a page of badblocks (4095
    bytes, the last line cut). 1000 bad ranges, the first page's all in
    namespace1.0's info block (no tag's data): the tags of the region are
    not "ok", they are "incomplete" with the reason; once the list fits a
    page again they are ok. (The old parser refused the cut text whole and
    kept the last known list, empty: both tags read "ok".)"""
    host = make_host("nvdimm")
    d = tagmemfs("--uevents", "none")
    mnt = d.mount_point
    w = Watcher(mnt)
    full = "".join(f"{2 * i} 1\n" for i in range(1000))
    assert len(full) > 4095 and 2 * 1000 < DATA_OFFSET // SECTOR
    set_badblocks(host, full[:4095])
    d.rescan()
    for tag in (hg.TAG_NV0, hg.TAG_NV1):
        ev = w.wait_for(lambda j, t=tag: j["event"] == "health" and j["tag"] == t, start=0)
        assert ev["health"] == "incomplete" and ev["bad_ranges"] == []
        assert "region1/badblocks is longer than the page" in ev["reason"], ev
        health = metadata(mnt, tag)["health"]
        assert health["status"] == "incomplete", health
        assert health["bad_ranges"] == []
        assert "region1/badblocks is longer than the page" in health["reason"]
    # A snapshot says so too, and wait --degraded does not take it for degraded.
    r = run_tagmem("wait", "--degraded", hg.TAG_NV0, "-m", mnt, "--timeout", "1")
    assert r.returncode == 6, (r.returncode, r.stdout, r.stderr)
    shown = run_tagmem("show", hg.TAG_NV0, "-m", mnt)
    assert "incomplete" in shown.stdout, shown.stdout
    # A range in TAG_NV1 on the first page: degraded, and still incomplete.
    first = f"{sector_of(1, 8192)} 8\n"
    set_badblocks(host, (first + full)[:4095])
    d.rescan()
    health = metadata(mnt, hg.TAG_NV1)["health"]
    assert health["status"] == "degraded"
    assert [(b["offset"], b["length"]) for b in health["bad_ranges"]] == [(8192, 4096)]
    assert "longer than the page" in health["reason"]
    # Under a page again: whole, ok.
    set_badblocks(host, "")
    d.rescan()
    for tag in (hg.TAG_NV0, hg.TAG_NV1):
        eventually(lambda t=tag: metadata(mnt, t)["health"] == {"status": "ok",
                                                                 "bad_ranges": []})
    w.close()


# -- CXL poison (docs/health.md, "CXL poison") -------------------------------
#
# The synthetic host's /sys gains the tracefs tagmemfs looks for
# (kernel/tracing with events/cxl/cxl_poison) and three CXL memdevs, two of
# which can list their poison (trigger_poison_list). The "dcd" scenario's
# region 0 (at 64 GiB) holds TAG_A (extents at 0 and 2 GiB, 1 GiB and
# 512 MiB) and TAG_B (256 MiB at 1 GiB). The instance a crashed run left,
# instances/<name> (one per mount point: instance_name), is there with its
# files, and its per_cpu/cpu{0,1}/trace_pipe_raw are FIFOs the test writes
# ring-buffer pages into as the kernel would fill them (tests/synthetic/
# tracebuf.py). The events' format files are real kernels' (tests/data:
# cxl_poison of Linux 6.12, cxl_dynamic_capacity of the DCD series), which
# the daemon reads with libtraceevent and decodes the records by.

CXL_BASE = 0x10_0000_0000
CXL_UUID = "5f3b6a2c-1d7e-4c9a-8e0f-0123456789ab"


DATA = Path(__file__).resolve().parent.parent / "data"
POISON_FORMAT = tb.EventFormat.load(DATA / "cxl_poison_format_6.12")
DC_FORMAT = tb.EventFormat.load(DATA / "cxl_dynamic_capacity_format_7.2_dcd")


def poison_record(hpa: int | None, dpa: int, length: int = 64, memdev: str = "mem0",
                  trace_type: str = "List") -> bytes:
    return tb.poison_record(POISON_FORMAT, hpa, dpa, length, memdev, trace_type)


def write_page(pipe: int, records: list[bytes], **kw) -> None:
    """One ring-buffer page into a CPU's trace_pipe_raw FIFO (a page is
    PIPE_BUF bytes: written and read whole)."""
    assert os.write(pipe, tb.page(records, **kw)) == tb.PAGE_SIZE


class CpuBuffers:
    """The instance's per_cpu/cpuN/trace_pipe_raw FIFOs, held open read and
    write (opening never blocks, and the daemon never sees a writer leave)."""

    def __init__(self, inst: Path):
        self.fds = [os.open(inst / f"per_cpu/cpu{n}/trace_pipe_raw", os.O_RDWR | os.O_NONBLOCK)
                    for n in (0, 1)]

    def write(self, records: list[bytes], cpu: int = 0, **kw) -> None:
        write_page(self.fds[cpu], records, **kw)

    def close(self) -> None:
        for fd in self.fds:
            if fd >= 0:
                os.close(fd)
        self.fds = [-1, -1]




def public_mount_point() -> Path:
    """A mount point other users can reach, known before the daemon starts
    (its tracefs instance is named after it)."""
    top = Path(tempfile.mkdtemp(prefix="tagmem-hl-", dir="/tmp"))
    top.chmod(0o755)
    (top / "mnt").mkdir()
    return top / "mnt"


def instance_name(mount_point: Path) -> str:
    """The daemon's tracefs instance (core's trace_instance_name)."""
    path = str(mount_point).rstrip("/")
    if path == "/run/tagmem":
        return "tagmem"
    out = "tagmem-"
    for b in path.lstrip("/").encode():
        c = chr(b)
        if c.isascii() and (c.isalnum() or c in "_."):
            out += c
        elif c == "/":
            out += "-"
        else:
            out += f"_x{b:02x}"
    return out


def fake_cxl(host, mount_point: Path, leftover: bool = True, event: bool = True,
             format_text: str | None = None, dc: bool = True) -> Path:
    """The tracefs and memdevs; returns the instance directory (in the tree)."""
    tracing = host.sys / "kernel/tracing"
    (tracing / "instances").mkdir(parents=True)
    if event:
        (tracing / "events/cxl/cxl_poison").mkdir(parents=True)
        (tracing / "events/cxl/cxl_poison/enable").write_text("0\n")
        (tracing / "events/cxl/cxl_poison/format").write_text(
            format_text if format_text is not None
            else (DATA / "cxl_poison_format_6.12").read_text())
        (tracing / "events/header_page").write_text((DATA / "header_page_7.2_dcd").read_text())
    if event and dc:
        (tracing / "events/cxl/cxl_dynamic_capacity").mkdir(parents=True)
        (tracing / "events/cxl/cxl_dynamic_capacity/format").write_text(
            (DATA / "cxl_dynamic_capacity_format_7.2_dcd").read_text())
    inst = tracing / "instances" / instance_name(mount_point)
    if leftover:
        (inst / "events/cxl/cxl_poison").mkdir(parents=True)
        (inst / "events/enable").write_text("X\n")  # whatever the crashed run left
        (inst / "events/cxl/cxl_poison/enable").write_text("0\n")
        (inst / "buffer_size_kb").write_text("7\n")  # plain files: written in place
        (inst / "buffer_percent").write_text("9\n")  # the kernel says 50; written in place
        if dc:
            (inst / "events/cxl/cxl_dynamic_capacity").mkdir(parents=True)
            (inst / "events/cxl/cxl_dynamic_capacity/enable").write_text("0\n")
        for n in (0, 1):
            (inst / f"per_cpu/cpu{n}").mkdir(parents=True)
            os.mkfifo(inst / f"per_cpu/cpu{n}/trace_pipe_raw")
    devices = host.sys / "bus/cxl/devices"
    for name, can_list in (("mem0", True), ("mem1", True), ("mem2", False)):
        (devices / name).mkdir()
        if can_list:
            (devices / name / "trigger_poison_list").write_text("")
    # /sys is a read-only bind mount; these two must take the daemon's writes.
    for sub in ("kernel/tracing", "bus/cxl/devices"):
        subprocess.run(["mount", "--bind", str(host.sys / sub), f"/sys/{sub}"], check=True)
    return inst


def test_cxl_poison_degrades_the_right_tag_at_the_right_offset(make_host, tagmemfs):
    host = make_host("dcd")
    mp = public_mount_point()
    inst = fake_cxl(host, mp)
    cpus = CpuBuffers(inst)
    try:
        d = tagmemfs("--uevents", "none", mount_point=mp)
        mnt = d.mount_point
        log = d.text()
        assert ("CXL poison: reading cxl:cxl_poison events from "
                f"/sys/kernel/tracing/instances/{inst.name} (left by an earlier run; reused)") \
            in log
        # Only cxl_poison (and the DCD event, where the kernel has it) on,
        # in a small buffer that wakes poll at the first record; every
        # memdev that can list its poison was asked to, the other left alone.
        assert (inst / "events/enable").read_text() == "0\n"
        assert (inst / "events/cxl/cxl_poison/enable").read_text() == "1\n"
        assert (inst / "events/cxl/cxl_dynamic_capacity/enable").read_text() == "1\n"
        assert (inst / "buffer_size_kb").read_text() == "64\n"
        assert (inst / "buffer_percent").read_text() == "0\n"
        devices = host.sys / "bus/cxl/devices"
        assert (devices / "mem0/trigger_poison_list").read_text() == "1\n"
        assert (devices / "mem1/trigger_poison_list").read_text() == "1\n"
        assert not (devices / "mem2/trigger_poison_list").exists()
        assert "listed the poison of 2 of 3 memdevs" in log
        # The system's own event switch is not touched.
        assert (host.sys / "kernel/tracing/events/cxl/cxl_poison/enable").read_text() == "0\n"
        for tag in (hg.TAG_A, hg.TAG_B):
            assert metadata(mnt, tag)["health"] == {"status": "ok", "bad_ranges": []}

        w = Watcher(mnt)
        # 4 KiB into TAG_A's second extent: offset 1 GiB + 4 KiB in its data.
        hpa = CXL_BASE + 2 * hg.GiB + 4096
        offset = hg.GiB + 4096
        unknown = bytearray(poison_record(hpa, 0x2000))
        unknown[POISON_FORMAT.fields["trace_type"].offset] = 9
        cpus.write([
            bytes(unknown),                                   # no trace_type the kernel has
            poison_record(hpa, 0x2000, length=0),             # an empty range
            poison_record(CXL_BASE + 3 * hg.GiB, 0x3000),     # the untagged extent
            poison_record(None, 0x5000, memdev="mem1"),       # no region: no hpa
            poison_record(hpa, 0x1000)])
        ev = w.wait_for(lambda j: j["event"] == "health")
        assert ev["tag"] == hg.TAG_A and ev["health"] == "degraded"
        assert [(b["offset"], b["length"]) for b in ev["bad_ranges"]] == [(offset, 64)]
        health = metadata(mnt, hg.TAG_A)["health"]
        assert health["status"] == "degraded"
        assert [(b["offset"], b["length"]) for b in health["bad_ranges"]] == [(offset, 64)]
        assert ISO.match(health["bad_ranges"][0]["first_seen"])
        assert metadata(mnt, hg.TAG_B)["health"]["status"] == "ok"
        # The malformed records were said and skipped, the good one after them taken.
        text = d.text()
        assert text.count("ignored a record of "
                          f"/sys/kernel/tracing/instances/{inst.name}:") == 2, text
        assert "unknown trace_type 9" in text and "dpa_length 0" in text

        # Users see offsets only; no physical address in the log's warnings either.
        for who in (None, 65534):
            if who is None:
                shown = (mnt / hg.TAG_A / "metadata").read_text()
            else:
                r = run_as(who, who, f"print(open('{mnt}/{hg.TAG_A}/metadata').read())")
                assert r.returncode == 0, r.stderr
                shown = r.stdout
                assert json.loads(shown)["health"]["status"] == "degraded"
            for addr in (hpa, CXL_BASE + 3 * hg.GiB):
                assert str(addr) not in shown and f"{addr:x}" not in shown
        r = run_tagmem("wait", "--degraded", hg.TAG_A, "-m", mnt, "--timeout", "10")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["bad_ranges"][0]["offset"] == offset

        # A record outside every tag changes nothing: it is taken in order,
        # before one for TAG_B, and only TAG_B's event follows.
        mark = len(w.lines)
        # (From the other CPU's buffer, with a Dynamic Capacity release of
        # TAG_B's extent before them, which the poison does not take.)
        cpus.write([tb.dc_record(DC_FORMAT, "release", hg.GiB, 256 * hg.MiB,
                                 bytes.fromhex(hg.TAG_B.replace("-", ""))),
                    poison_record(CXL_BASE + 15 * hg.GiB, 0x9000, memdev="mem1"),
                    poison_record(CXL_BASE + hg.GiB, 0xa000, memdev="mem1")], cpu=1)
        ev = w.wait_for(lambda j: j["event"] == "health" and j["tag"] == hg.TAG_B)
        assert [(b["offset"], b["length"]) for b in ev["bad_ranges"]] == [(0, 64)]
        assert [j["tag"] for j in w.lines[mark:] if j["event"] == "health"] == [hg.TAG_B]
        # The release names TAG_B (docs/dcd.md): marked asked back, once,
        # and every later line of TAG_B says so; TAG_A is not asked back.
        rel = [j for j in w.lines[mark:] if j["event"] == "release-requested"]
        assert [(j["tag"], j["state"], j["release_requested"]) for j in rel] == [
            (hg.TAG_B, "ready", True)], rel
        assert ev["release_requested"] is True
        assert "release_requested" in metadata(mnt, hg.TAG_B)
        assert "release_requested" not in metadata(mnt, hg.TAG_A)
        r = run_tagmem("wait", "--release-requested", hg.TAG_B, "-m", mnt, "--timeout", "10")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"tag": hg.TAG_B, "event": "release-requested",
                                        "device": ev["device"], "state": "ready"}
        r = run_tagmem("wait", "--release-requested", hg.TAG_A, "-m", mnt, "--timeout", "0.3")
        assert r.returncode == 6, r
        r = run_tagmem("wait", "--release-requested", "00000000-0000-4000-8000-0000000000ee",
                       "-m", mnt, "--timeout", "10")
        assert r.returncode == 0 and json.loads(r.stdout)["event"] == "removed", r
        # A release with no tag (untagged capacity) and one of a tag nobody
        # shows change nothing.
        mark = len(w.lines)
        cpus.write([tb.dc_record(DC_FORMAT, "release", 2 * hg.GiB, 256 * hg.MiB, bytes(16)),
                    tb.dc_record(DC_FORMAT, "forced_release", 2 * hg.GiB, 256 * hg.MiB,
                                 bytes.fromhex("ee" * 16)),
                    poison_record(CXL_BASE + hg.GiB + 0x1000, 0xb000, memdev="mem1",
                                  trace_type="Inject")])
        ev = w.wait_for(lambda j: j["event"] == "health" and j["tag"] == hg.TAG_B, start=mark)
        assert [(b["offset"], b["length"]) for b in ev["bad_ranges"]] == [(0, 64), (0x1000, 64)]
        assert not [j for j in w.lines[mark:] if j["event"] == "release-requested"]
        assert [(b["offset"], b["length"]) for b in
                metadata(mnt, hg.TAG_A)["health"]["bad_ranges"]] == [(offset, 64)]

        # SIGHUP: the lists are read anew; the fake devices list nothing now
        # (the kernel would have put the list in the pipe during the write),
        # so what was listed before is gone and TAG_A is ok again.
        for name in ("mem0", "mem1"):
            (devices / name / "trigger_poison_list").write_text("")
        d.rescan()
        assert (devices / "mem0/trigger_poison_list").read_text() == "1\n"
        assert (devices / "mem1/trigger_poison_list").read_text() == "1\n"
        mark = w.pos
        for tag in (hg.TAG_A, hg.TAG_B):
            ev = w.wait_for(lambda j, t=tag: j["event"] == "health" and j["tag"] == t,
                            start=mark)
            assert ev["health"] == "ok" and ev["bad_ranges"] == []
            assert metadata(mnt, tag)["health"]["status"] == "ok"
        # An injected record after the listing is learned as it comes.
        cpus.write([poison_record(CXL_BASE, 0x0, trace_type="Inject")])
        ev = w.wait_for(lambda j: j["event"] == "health" and j["tag"] == hg.TAG_A)
        assert [(b["offset"], b["length"]) for b in ev["bad_ranges"]] == [(0, 64)]
        # ... and a Clear of it takes it back.
        cpus.write([poison_record(CXL_BASE, 0x0, trace_type="Clear")])
        ev = w.wait_for(lambda j: j["event"] == "health" and j["tag"] == hg.TAG_A)
        assert ev["health"] == "ok"
        # Records the ring buffer overwrote unread: the lists are asked for again.
        for name in ("mem0", "mem1"):
            (devices / name / "trigger_poison_list").write_text("")
        cpus.write([], missed=12)
        eventually(lambda: "trace events were lost; listing the poison again" in d.text())
        # The warning comes before the listing: wait for the writes, not the log.
        eventually(lambda: all((devices / n / "trigger_poison_list").read_text() == "1\n"
                               for n in ("mem0", "mem1")))
        w.close()

        # A clean exit takes the instance down: the buffers closed first
        # (tracefs refuses to remove an instance in use), the events off,
        # then rmdir, which tracefs does and a plain directory with files refuses.
        assert d.stop() == 0
        assert (inst / "events/cxl/cxl_poison/enable").read_text() == "0\n"
        assert (inst / "events/cxl/cxl_dynamic_capacity/enable").read_text() == "0\n"
        assert inst.is_dir()
        text = d.text()
        assert (f"cannot remove /sys/kernel/tracing/instances/{inst.name}: Directory not empty"
                in text)
    finally:
        cpus.close()


def test_cxl_poison_pipe_that_ends_is_closed_and_set_up_again_at_sighup(make_host, tagmemfs):
    """tracefs's trace_pipe_raw never ends; one that does (here a CPU's FIFO
    whose last writer left) is closed rather than polled again, what it gave
    stays, and SIGHUP sets the instance up anew."""
    host = make_host("dcd")
    mp = public_mount_point()
    inst = fake_cxl(host, mp)
    # A FIFO without a writer reads as its end: one is open before the daemon.
    cpus = CpuBuffers(inst)
    d = tagmemfs("--uevents", "none", mount_point=mp)
    mnt = d.mount_point
    w = Watcher(mnt)
    cpus.write([poison_record(CXL_BASE + 4096, 0x1000, trace_type="Inject")])
    ev = w.wait_for(lambda j: j["event"] == "health" and j["tag"] == hg.TAG_A)
    assert [(b["offset"], b["length"]) for b in ev["bad_ranges"]] == [(4096, 64)]
    os.close(cpus.fds[1])  # one CPU's buffer ends: the whole instance is read no more
    cpus.fds[1] = -1
    eventually(lambda: "no more CXL events are read until SIGHUP" in d.text())
    text = d.text()
    assert f"a ring buffer of /sys/kernel/tracing/instances/{inst.name} ended" in text, text
    # Not a cleared error: TAG_A stays degraded while nothing is read, and
    # says that nothing is read; TAG_B, in CXL memory too, is not ok.
    eventually(lambda: "trace pipe ended" in metadata(mnt, hg.TAG_A)["health"].get("reason", ""))
    assert metadata(mnt, hg.TAG_A)["health"]["status"] == "degraded"
    eventually(lambda: metadata(mnt, hg.TAG_B)["health"]["status"] == "incomplete")

    cpus.close()
    cpus = CpuBuffers(inst)
    try:
        d.rescan()
        eventually(lambda: d.text().count("CXL poison: reading cxl:cxl_poison events") == 2)
        mark = w.pos
        cpus.write([poison_record(CXL_BASE + hg.GiB, 0xa000, memdev="mem1",
                                  trace_type="Inject")], cpu=1)
        ev = w.wait_for(lambda j: j["event"] == "health" and j["tag"] == hg.TAG_B
                        and j["health"] == "degraded", start=mark)
        assert [(b["offset"], b["length"]) for b in ev["bad_ranges"]] == [(0, 64)]
        assert "reason" not in metadata(mnt, hg.TAG_B)["health"]  # listed whole again
        w.close()
        assert d.stop() == 0
    finally:
        cpus.close()


def test_cxl_poison_setup_failure_removes_what_it_made(make_host, tagmemfs):
    """A fresh instance is made with mkdir; on a fake /sys it is an empty
    directory (tracefs fills a real one), so the setup fails: one line, the
    directory it made removed, and tags served as ever."""
    host = make_host("dcd")
    mp = public_mount_point()
    inst = fake_cxl(host, mp, leftover=False)
    d = tagmemfs("--uevents", "none", mount_point=mp)
    assert not inst.exists()
    text = d.text()
    assert text.count("CXL poison: ") == 1, text
    where = f"/sys/kernel/tracing/instances/{inst.name}/events/enable"
    assert (f"CXL poison: cannot write {where}" in text
            or f"cannot open {where}" in text), text
    assert "NVDIMM bad blocks are unaffected" in text
    assert metadata(d.mount_point, hg.TAG_A)["health"]["status"] == "ok"
    # Tried again at SIGHUP, said again only if the reason changed.
    d.rescan()
    assert d.text().count("CXL poison: ") == 1
    assert not inst.exists()


def test_no_cxl_event_is_one_line_and_nvdimm_health_works(make_host, tagmemfs):
    host = make_host("mixed")
    mp = public_mount_point()
    inst = fake_cxl(host, mp, leftover=False, event=False)
    d = tagmemfs("--uevents", "none", mount_point=mp)
    text = d.text()
    assert text.count("CXL poison: ") == 1, text
    assert "the kernel has no cxl:cxl_poison trace event" in text
    assert not inst.exists()
    assert not (host.sys / "bus/cxl/devices/mem0/trigger_poison_list").read_text()
    # NVDIMM bad blocks as before.
    (host.sys / "bus/nd/devices/region1/badblocks").write_text(
        f"{sector_of(1, 8192)} 8\n")
    d.rescan()
    health = metadata(d.mount_point, hg.TAG_NV1)["health"]
    assert [(b["offset"], b["length"]) for b in health["bad_ranges"]] == [(8192, 4096)]
    assert d.text().count("CXL poison: ") == 1


def test_cxl_poison_events_lost_during_a_listing_keep_the_known_poison(make_host, tagmemfs):
    """Issue 19, item 1. mem0's trigger_poison_list is a FIFO whose buffer
    the test keeps full, so the daemon's write of "1\\n" waits for the test,
    which then plays the kernel: it puts mem0's list in the ring buffer, on
    a page that says events were missed (the list overflowed it), then lets the
    write return. The daemon lost events listing mem0, and keeps mem0's last
    complete list: TAG_A stays degraded (with the reason),
    TAG_B (same CXL region) is "incomplete". (The old daemon took the lossy
    list as whole and dropped TAG_A's record: TAG_A read "ok".)"""
    host = make_host("dcd")
    mp = public_mount_point()
    inst = fake_cxl(host, mp)
    cpus = CpuBuffers(inst)
    devices = host.sys / "bus/cxl/devices"
    trig = None
    try:
        d = tagmemfs("--uevents", "none", mount_point=mp)
        mnt = d.mount_point
        w = Watcher(mnt)
        cpus.write([poison_record(CXL_BASE + 4096, 0x1000)])
        ev = w.wait_for(lambda j: j["event"] == "health" and j["tag"] == hg.TAG_A)
        assert [(b["offset"], b["length"]) for b in ev["bad_ranges"]] == [(4096, 64)]

        (devices / "mem0/trigger_poison_list").unlink()
        os.mkfifo(devices / "mem0/trigger_poison_list")
        trig = os.open(devices / "mem0/trigger_poison_list", os.O_RDWR | os.O_NONBLOCK)
        while True:
            try:
                os.write(trig, b"x" * 4096)
            except BlockingIOError:
                break
        while True:  # to the last byte: a 2-byte write must wait
            try:
                os.write(trig, b"x")
            except BlockingIOError:
                break

        def daemon_writing() -> bool:
            for task in Path(f"/proc/{d.proc.pid}/task").iterdir():
                try:
                    if "pipe_write" in (task / "wchan").read_text():
                        return True
                except OSError:
                    pass
            return False

        # Not d.rescan(): that waits for the rescan's end, and the daemon
        # is to wait in the write until the test lets it go.
        d.proc.send_signal(signal.SIGHUP)
        eventually(daemon_writing)
        cpus.write([poison_record(None, 0x9000)], missed=600)
        # A pipe's buffer is in pages: a page read lets the write in.
        assert os.read(trig, 4096) == b"x" * 4096
        eventually(lambda: "the poison list of mem0 was not read whole" in d.text())
        ev = w.wait_for(lambda j: j["event"] == "health" and j["tag"] == hg.TAG_B)
        assert ev["health"] == "incomplete"
        health = metadata(mnt, hg.TAG_A)["health"]
        assert health["status"] == "degraded", health
        assert [(b["offset"], b["length"]) for b in health["bad_ranges"]] == [(4096, 64)]
        assert "mem0" in health["reason"]
        health = metadata(mnt, hg.TAG_B)["health"]
        assert health["status"] == "incomplete" and "mem0" in health["reason"], health
        assert "listed the poison of 1 of 3 memdevs" in d.text()

        # The trigger a file again: the list is read whole (empty now), so
        # TAG_A's record goes and both tags are ok.
        os.close(trig)
        trig = None
        (devices / "mem0/trigger_poison_list").unlink()
        (devices / "mem0/trigger_poison_list").write_text("")
        d.rescan()
        for tag in (hg.TAG_A, hg.TAG_B):
            eventually(lambda t=tag: metadata(mnt, t)["health"] == {"status": "ok",
                                                                     "bad_ranges": []})
        w.close()
    finally:
        if trig is not None:
            os.close(trig)
        cpus.close()


def test_cxl_poison_event_of_an_unfamiliar_format_is_not_ok(make_host, tagmemfs):
    """Issue 19, item 3: the event's format file (kernel ABI) is read with
    libtraceevent; a kernel whose cxl_poison has no field tagmem reads (here
    hpa renamed) is refused before any record is read, and the tags in CXL
    memory are "incomplete", not "ok"."""
    host = make_host("dcd")
    mp = public_mount_point()
    fmt = (DATA / "cxl_poison_format_6.12").read_text().replace("u64 hpa;", "u64 hpa_first;")
    inst = fake_cxl(host, mp, format_text=fmt)
    d = tagmemfs("--uevents", "none", mount_point=mp)
    text = d.text()
    assert "CXL poison: the kernel's cxl:cxl_poison format: no field hpa" in text, text
    for tag in (hg.TAG_A, hg.TAG_B):
        health = metadata(d.mount_point, tag)["health"]
        assert health["status"] == "incomplete", health
        assert "format tagmem cannot read" in health["reason"]
    # Nothing was set up in the instance.
    assert (inst / "events/cxl/cxl_poison/enable").read_text() == "0\n"
    assert not (host.sys / "bus/cxl/devices/mem0/trigger_poison_list").read_text()
    # Said once across SIGHUPs.
    d.rescan()
    assert d.text().count("no field hpa") == 1
