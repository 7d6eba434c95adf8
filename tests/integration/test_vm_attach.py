# SPDX-License-Identifier: Apache-2.0
"""tagmem vm-attach / vm-detach against a stand-in for QEMU's QMP (issue 18,
docs/vm.md): every refusal and its exit code, the outcomes of a detach as
QEMU reports them, and vm-attach --follow forwarding a host memory error as
poison at the same offset and asking the tag back when it leaves the host.

Why a stand-in: what tagmem decides from QEMU's answers (a device not found,
a release QEMU refuses as not held or still pending) is shown by answering
exactly that; the QEMU test (tests/qemu/test_vm_cxl.py) shows that QEMU and
a guest kernel answer so. The host is the synthetic "nvdimm" scenario with
tagmemfs running; its badblocks are rewritten by hand and a rescan tells
the daemon (as in test_health)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import hostgen as hg
import pytest
from conftest import TAGMEM, eventually, run_tagmem
from test_health import metadata, sector_of, set_badblocks

EXIT = {"unknown": 3, "not_usable": 5, "qmp": 17, "not_declared": 18, "refused": 19,
        "not_attached": 20}


class FakeQmp:
    """A QMP server: the greeting, qmp_capabilities, then answers from
    `devices` (id -> backend size) and the `release` script: a list of
    answers to successive cxl-release-dynamic-capacity ("ok", "non-existing",
    "pending"), the last repeated. Records every command."""

    def __init__(self, path: Path, devices: dict[str, int]):
        self.path, self.devices = path, devices
        self.release = ["non-existing"]
        self.add_error: str | None = None
        self.commands: list[dict] = []
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _answer(self, cmd: dict) -> dict:
        name, args = cmd.get("execute"), cmd.get("arguments", {})
        if name == "qmp_capabilities":
            return {"return": {}}
        self.commands.append(cmd)
        if name == "qom-get":
            path, prop = args["path"], args["property"]
            dev = path.removeprefix("/machine/peripheral/")
            if path.startswith("/objects/"):
                return {"return": self.devices[path.removeprefix("/objects/")]}
            if dev not in self.devices:
                return {"error": {"class": "DeviceNotFound", "desc": f"Device '{path}' not found"}}
            return {"return": "cxl-type3" if prop == "type" else f"/objects/{dev}"}
        if name == "cxl-add-dynamic-capacity":
            if self.add_error:
                return {"error": {"class": "GenericError", "desc": self.add_error}}
            return {"return": {}}
        if name == "cxl-release-dynamic-capacity":
            what = self.release.pop(0) if len(self.release) > 1 else self.release[0]
            if what == "ok":
                return {"return": {}}
            return {"error": {"class": "GenericError",
                              "desc": f"cannot release extent with {what} DPA range"}}
        if name == "cxl-inject-poison":
            return {"return": {}}
        return {"error": {"class": "CommandNotFound", "desc": name}}

    def _serve(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            with c, c.makefile("rw") as f:
                f.write(json.dumps({"QMP": {"version": {}, "capabilities": []}}) + "\n")
                f.flush()
                for line in f:
                    f.write(json.dumps(self._answer(json.loads(line))) + "\n")
                    f.flush()

    def named(self, name: str) -> list[dict]:
        return [c for c in self.commands if c["execute"] == name]

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def host(make_host, tagmemfs, tmp_path):
    h = make_host("nvdimm")
    d = tagmemfs("--uevents", "none")
    size = metadata(d.mount_point, hg.TAG_NV1)["size"]
    q = FakeQmp(tmp_path / "qmp.sock", {f"tagmem-{hg.TAG_NV1}": size})
    yield h, d, q, size
    q.close()


def cli(d, *args, **kw):
    return run_tagmem(*args, "--mount-point", str(d.mount_point), **kw) \
        if args[0] == "vm-attach" else run_tagmem(*args, **kw)


def test_attach_adds_one_extent_covering_the_tag(host):
    _, d, q, size = host
    r = cli(d, "vm-attach", "--qmp", str(q.path), hg.TAG_NV1)
    assert r.returncode == 0, r.stderr
    [add] = q.named("cxl-add-dynamic-capacity")
    assert add["arguments"] == {
        "path": f"/machine/peripheral/tagmem-{hg.TAG_NV1}", "host-id": 0, "region": 0,
        "tag": hg.TAG_NV1, "selection-policy": "prescriptive",
        "extents": [{"offset": 0, "len": size}]}


def test_attach_refusals(host, tmp_path):
    _, d, q, size = host
    unknown = "0badc0de-0000-4000-8000-000000000018"
    r = cli(d, "vm-attach", "--qmp", str(q.path), unknown)
    assert r.returncode == EXIT["unknown"], r.stderr
    r = cli(d, "vm-attach", "--qmp", str(tmp_path / "no.sock"), hg.TAG_NV1)
    assert r.returncode == EXIT["qmp"] and "no.sock" in r.stderr, r.stderr
    # On the host, not given to the guest at boot.
    r = cli(d, "vm-attach", "--qmp", str(q.path), hg.TAG_NV0)
    assert r.returncode == EXIT["not_declared"] and "given at boot" in r.stderr, r.stderr
    # Declared for memory of another size.
    q.devices[f"tagmem-{hg.TAG_NV1}"] = size // 2
    r = cli(d, "vm-attach", "--qmp", str(q.path), hg.TAG_NV1)
    assert r.returncode == EXIT["not_declared"] and "other memory" in r.stderr, r.stderr
    q.devices[f"tagmem-{hg.TAG_NV1}"] = size
    q.add_error = "extent range is beyond the region end"
    r = cli(d, "vm-attach", "--qmp", str(q.path), hg.TAG_NV1)
    assert r.returncode == EXIT["qmp"] and "beyond the region end" in r.stderr, r.stderr
    # Not QMP at all.
    plain = socket.socket(socket.AF_UNIX)
    plain.bind(str(tmp_path / "plain.sock"))
    plain.listen(1)
    threading.Thread(target=lambda: plain.accept()[0].sendall(b'{"hello":1}\n'),
                     daemon=True).start()
    r = cli(d, "vm-attach", "--qmp", str(tmp_path / "plain.sock"), hg.TAG_NV1)
    assert r.returncode == EXIT["qmp"] and "not greet as QMP" in r.stderr, r.stderr
    plain.close()
    assert not q.named("cxl-add-dynamic-capacity")[1:]  # only the one QEMU refused


def test_detach_outcomes_as_qemu_reports_them(host):
    _, d, q, size = host
    detach = lambda *a: cli(d, "vm-detach", "--qmp", str(q.path), *a, hg.TAG_NV1)
    q.release = ["non-existing"]
    r = detach("--wait", "1")
    assert r.returncode == EXIT["not_attached"], r.stderr
    q.release = ["pending"]
    r = detach()
    assert r.returncode == EXIT["refused"] and "not accepted" in r.stderr, r.stderr
    # Queued, then gone at the second request: the guest gave it back.
    q.release = ["ok", "non-existing"]
    r = detach("--wait", "5")
    assert r.returncode == 0 and "released by the guest" in r.stdout, r.stderr
    # Still held whenever asked: refused, after several requests.
    q.commands.clear()
    q.release = ["ok"]
    t = time.monotonic()
    r = detach("--wait", "1")
    assert r.returncode == EXIT["refused"] and "refused (deferred" in r.stderr, r.stderr
    assert 0.9 < time.monotonic() - t < 5
    assert len(q.named("cxl-release-dynamic-capacity")) >= 3
    # A guest without the device.
    r = cli(d, "vm-detach", "--qmp", str(q.path), hg.TAG_NV0)
    assert r.returncode == EXIT["not_declared"], r.stderr


def test_follow_forwards_errors_and_releases_a_tag_that_leaves(host, tmp_path):
    h, d, q, size = host
    p = subprocess.Popen([str(TAGMEM), "vm-attach", "--follow", "--qmp", str(q.path),
                          "--mount-point", str(d.mount_point), hg.TAG_NV1],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        eventually(lambda: q.named("cxl-add-dynamic-capacity"), timeout=10, what="the add")
        time.sleep(0.5)  # its watch stream is up
        offset = 5 * hg.MiB + 4096
        set_badblocks(h, f"{sector_of(1, offset)} 8\n")
        d.rescan()
        eventually(lambda: q.named("cxl-inject-poison"), timeout=10, what="poison")
        poison = q.named("cxl-inject-poison")
        assert poison[0]["arguments"] == {"path": f"/machine/peripheral/tagmem-{hg.TAG_NV1}",
                                          "start": offset, "length": 4096}
        # The same list again (another rescan): nothing new is sent.
        d.rescan()
        time.sleep(1)
        assert len(q.named("cxl-inject-poison")) == 1
        # The tag leaves the host: its namespace now carries another UUID.
        q.release = ["ok"]
        (h.sys / "bus/nd/devices/namespace1.1/uuid").write_text(
            "0badc0de-0000-4000-8000-0000000000aa\n")
        d.rescan()
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    [rel] = q.named("cxl-release-dynamic-capacity")
    assert rel["arguments"]["tag"] == hg.TAG_NV1
    assert rel["arguments"]["extents"] == [{"offset": 0, "len": size}]
    assert f"DPA {offset:#x}" in out and "left the host" in out, out


def test_follow_releases_a_tag_that_is_no_longer_usable(host):
    """A tag still on the host but in conflict (another namespace now
    carries its UUID) is asked back from the guest like one that left."""
    h, d, q, size = host
    p = subprocess.Popen([str(TAGMEM), "vm-attach", "--follow", "--qmp", str(q.path),
                          "--mount-point", str(d.mount_point), hg.TAG_NV1],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        eventually(lambda: q.named("cxl-add-dynamic-capacity"), timeout=10, what="the add")
        time.sleep(0.5)  # its watch stream is up
        q.release = ["ok"]
        (h.sys / "bus/nd/devices/namespace1.0/uuid").write_text(hg.TAG_NV1 + "\n")
        d.rescan()
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert metadata(d.mount_point, hg.TAG_NV1)["state"] == "conflict"
    assert p.returncode == 0, err
    [rel] = q.named("cxl-release-dynamic-capacity")
    assert rel["arguments"]["tag"] == hg.TAG_NV1
    assert rel["arguments"]["extents"] == [{"offset": 0, "len": size}]
    assert f"tag {hg.TAG_NV1}: is conflict on the host; the guest was asked" in out, out
