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
import re
import socket
import subprocess
import time
from pathlib import Path

import hostgen as hg
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
