# SPDX-License-Identifier: Apache-2.0
"""Tier 3: real FUSE mounts of the real tagmemfs on synthetic hosts."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import hostgen as hg
import pytest
from conftest import TAGMEM, TAGMEMFS, mount_options, preload_env, run_as, run_tagmem, write_config

NOBODY = 65534


def open_errno(path: Path, flags=os.O_RDWR) -> int:
    """errno of open(), 0 if it opened (then closed)."""
    try:
        os.close(os.open(path, flags))
        return 0
    except OSError as e:
        return e.errno


def open_errno_as(uid: int, gid: int, path: Path) -> str:
    r = run_as(uid, gid, f"""
import errno, os
try:
    os.close(os.open({str(path)!r}, os.O_RDWR)); print("OPENED")
except OSError as e:
    print(errno.errorcode[e.errno])
""")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def snapshot(root: Path) -> dict:
    """Every path under root with (mode, size, rdev, link target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_rdev, st.st_uid,
                                             os.readlink(p) if p.is_symlink() else None)
    return out


def test_every_file_of_every_tag(make_host, tagmemfs):
    make_host("mixed")
    d = tagmemfs()
    mnt = d.mount_point
    expected = {hg.TAG_A: "dax0.0", hg.TAG_B: "dax0.1", hg.TAG_NV0: "dax1.0",
                hg.TAG_NV1: "dax1.1"}
    assert sorted(os.listdir(mnt)) == sorted([*expected, hg.TAG_C])
    root = mnt.stat()
    assert stat.S_IMODE(root.st_mode) == 0o555 and root.st_nlink == 2 + len(expected) + 1
    now = time.time()
    for tag, dev in expected.items():
        t = mnt / tag
        assert sorted(os.listdir(t)) == ["data", "dev", "metadata", "shareable", "size"]
        st = t.stat()
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o555
        assert st.st_nlink == 2 and st.st_uid == 0 and abs(st.st_mtime - now) < 120
        assert os.readlink(t / "dev") == f"/dev/{dev}"
        shown = json.loads(run_tagmem("show", "--json", tag).stdout)
        assert (t / "size").read_text() == f"{shown['size']}\n"
        # DCD tags are shareable unless configured not (issue 19); NVDIMM not.
        dcd = tag in (hg.TAG_A, hg.TAG_B)
        assert (t / "shareable").read_text() == ("1\n" if dcd else "0\n")
        meta = (t / "metadata").read_text()
        assert json.loads(meta) == without_ranges(shown)
        for name, content in (("size", (t / "size").read_text()), ("metadata", meta)):
            fst = (t / name).stat()
            assert stat.S_ISREG(fst.st_mode) and stat.S_IMODE(fst.st_mode) == 0o444
            assert fst.st_size == len(content.encode()) and fst.st_nlink == 1
        # data leads to the daemon's device node (fs/node_dir.hpp says why).
        assert os.readlink(t / "data") == f"{mnt}.nodes/{tag}"
        data = (t / "data").stat()
        assert stat.S_ISCHR(data.st_mode) and stat.S_IMODE(data.st_mode) == 0o600
        assert (data.st_uid, data.st_gid) == (0, 0)
        assert (os.major(data.st_rdev), os.minor(data.st_rdev)) == (
            shown["devices"][0]["major"], shown["devices"][0]["minor"])
        assert os.major(data.st_rdev) == hg.dax_major()


def without_ranges(shown: dict) -> dict:
    """What `metadata` shows: `tagmem show --json` as root minus what the
    kernel shows only to root (physical ranges)."""
    out = json.loads(json.dumps(shown))
    for d in out["devices"]:
        del d["ranges"]
    return out


def test_metadata_hides_what_the_kernel_shows_only_to_root(make_host, tagmemfs):
    host = make_host("mixed")
    mnt = tagmemfs().mount_point
    # The synthetic sysfs files are world-readable; on a real kernel
    # mappingN/{start,end} and resource are 0400. Either way only root sees.
    for tag in (hg.TAG_A, hg.TAG_NV0):
        shown = json.loads(run_tagmem("show", "--json", tag).stdout)
        starts = [r["start"] for d in shown["devices"] for r in d["ranges"]]
        assert starts and all(starts)
        r = run_as(NOBODY, NOBODY, f"print(open({str(mnt / tag / 'metadata')!r}).read())")
        assert r.returncode == 0, r.stderr
        meta = json.loads(r.stdout)
        assert meta == without_ranges(shown)
        for start in starts:
            assert str(start) not in r.stdout and f"{start:x}" not in r.stdout
        # tagmem run by that user shows no more than the mount.
        r = run_as(NOBODY, NOBODY, f"""
import subprocess, sys
sys.stdout.write(subprocess.run([{str(TAGMEM)!r}, "show", "--json", {tag!r}],
                                capture_output=True, text=True).stdout)""")
        assert json.loads(r.stdout) == meta
    r = run_as(NOBODY, NOBODY, f"""
import subprocess, sys
sys.stdout.write(subprocess.run([{str(TAGMEM)!r}, "list", "--json"], capture_output=True,
                                text=True).stdout)""")
    listed = json.loads(r.stdout)
    assert listed["untagged"] and all("ranges" not in u for u in listed["untagged"])
    assert all("ranges" not in d for t in listed["tags"] for d in t["devices"])
    assert host


def test_common_tools_work(make_host, tagmemfs, tmp_path):
    make_host("dcd")
    mnt = tagmemfs().mount_point
    found = subprocess.run(["find", str(mnt)], capture_output=True, text=True, check=True)
    # two ready tags (dir + 5 files) and offered TAG_C (dir, metadata, shareable)
    assert len(found.stdout.splitlines()) == 1 + 2 * 6 + 3
    subprocess.run(["ls", "-lR", str(mnt)], capture_output=True, check=True)
    subprocess.run(["cp", str(mnt / hg.TAG_A / "metadata"), str(tmp_path / "m.json")],
                   check=True)
    assert json.loads((tmp_path / "m.json").read_text())["tag"] == hg.TAG_A
    wc = subprocess.run(["wc", "-c", str(mnt / hg.TAG_A / "size")], capture_output=True,
                        text=True, check=True)
    assert wc.stdout.split()[0] == str(len(f"{hg.GiB + 512 * hg.MiB}\n"))
    # Tab completion and `ls` see canonical names only.
    assert not (mnt / hg.TAG_A.upper()).exists()
    assert not (mnt / "not-a-tag").exists()
    assert not (mnt / hg.TAG_A / "nothing").exists()


def test_data_open_reaches_device_dax(make_host, tagmemfs):
    # No real dax device exists here: device_dax answers ENXIO, which proves
    # the open went to the driver and not to the daemon.
    make_host("dcd")
    mnt = tagmemfs().mount_point
    assert open_errno(mnt / hg.TAG_A / "data") == errno.ENXIO
    assert open_errno(mnt / hg.TAG_A / "data", os.O_RDONLY) == errno.ENXIO


def test_other_users_are_refused_by_default(make_host, tagmemfs):
    make_host("dcd")
    mnt = tagmemfs().mount_point
    assert open_errno_as(NOBODY, NOBODY, mnt / hg.TAG_A / "data") == "EACCES"
    # Everything else is world-readable.
    r = run_as(NOBODY, NOBODY, f"print(open({str(mnt / hg.TAG_A / 'metadata')!r}).read())")
    assert r.returncode == 0 and json.loads(r.stdout)["tag"] == hg.TAG_A


def test_configured_grants_open_exactly_their_tag(make_host, tagmemfs, tmp_path):
    make_host("dcd")
    conf = write_config(tmp_path, f"""[tag {hg.TAG_A}]
owner = {NOBODY}
mode = 0600
[tag {hg.TAG_B}]
group = 4343
mode = 0060
""")
    mnt = tagmemfs("-c", conf).mount_point
    a, b = mnt / hg.TAG_A / "data", mnt / hg.TAG_B / "data"
    assert (a.stat().st_uid, stat.S_IMODE(a.stat().st_mode)) == (NOBODY, 0o600)
    assert (b.stat().st_gid, stat.S_IMODE(b.stat().st_mode)) == (4343, 0o060)
    assert open_errno_as(NOBODY, NOBODY, a) == "ENXIO"   # reached device_dax
    assert open_errno_as(NOBODY, NOBODY, b) == "EACCES"  # the grant of A opens no other
    assert open_errno_as(1234, 4343, b) == "ENXIO"       # group grant
    assert open_errno_as(1234, 4343, a) == "EACCES"


MUTATIONS = {
    "create": lambda m, t: os.close(os.open(m / "new", os.O_CREAT | os.O_WRONLY, 0o600)),
    "create_in_tag": lambda m, t: os.close(os.open(m / t / "new", os.O_CREAT | os.O_WRONLY)),
    "mkdir": lambda m, t: os.mkdir(m / "newdir"),
    "mknod": lambda m, t: os.mknod(m / t / "node", 0o600 | stat.S_IFCHR, os.makedev(1, 3)),
    "unlink": lambda m, t: os.unlink(m / t / "size"),
    "unlink_data": lambda m, t: os.unlink(m / t / "data"),
    "rmdir": lambda m, t: os.rmdir(m / t),
    "rename": lambda m, t: os.rename(m / t / "size", m / t / "size2"),
    "rename_dir": lambda m, t: os.rename(m / t, m / "x"),
    "symlink": lambda m, t: os.symlink("/dev/null", m / t / "evil"),
    "link": lambda m, t: os.link(m / t / "size", m / t / "size2"),
    "write": lambda m, t: os.close(os.open(m / t / "metadata", os.O_WRONLY)),
    "truncate": lambda m, t: os.truncate(m / t / "size", 0),
    "open_trunc": lambda m, t: os.close(os.open(m / t / "size", os.O_RDONLY | os.O_TRUNC)),
    "chmod_data": lambda m, t: os.chmod(m / t / "data", 0o666),
    "chown_data": lambda m, t: os.chown(m / t / "data", NOBODY, NOBODY),
    "chmod_dir": lambda m, t: os.chmod(m / t, 0o777),
    "utime": lambda m, t: os.utime(m / t / "size", (0, 0)),
    "setxattr": lambda m, t: os.setxattr(m / t / "size", "user.x", b"1"),
    "removexattr": lambda m, t: os.removexattr(m / t / "size", "user.x"),
}


@pytest.mark.parametrize("op", sorted(MUTATIONS))
def test_mutations_are_refused_and_change_nothing(make_host, tagmemfs, op):
    make_host("dcd")
    mnt = tagmemfs().mount_point
    before = snapshot(mnt)
    with pytest.raises(OSError) as e:
        MUTATIONS[op](mnt, hg.TAG_A)
    assert e.value.errno in (errno.EROFS, errno.EPERM, errno.EACCES), os.strerror(e.value.errno)
    assert snapshot(mnt) == before


def test_conflict_and_system_ram_keep_only_metadata(make_host, tagmemfs):
    make_host("conflict")
    d = tagmemfs()
    t = d.mount_point / hg.TAG_CONFLICT
    assert sorted(os.listdir(t)) == ["metadata", "shareable"]
    meta = json.loads((t / "metadata").read_text())
    assert meta["state"] == "conflict" and "dax0.0" in meta["reason"]
    assert not (t / "data").exists() and not (t / "dev").exists()
    d.stop()

    make_host("system-ram")
    t = tagmemfs().mount_point / hg.TAG_RAM
    assert sorted(os.listdir(t)) == ["metadata", "shareable", "size"]
    meta = json.loads((t / "metadata").read_text())
    assert meta["state"] == "system-ram" and "system RAM" in meta["reason"]


def _views_agree(mnt: Path, expected: dict[str, str], offered=()) -> None:
    """lookup, readdir and stat all tell the same story."""
    assert sorted(os.listdir(mnt)) == sorted([*expected, *offered])
    for tag in offered:
        assert sorted(os.listdir(mnt / tag)) == ["metadata", "shareable"]
        assert json.loads((mnt / tag / "metadata").read_text())["state"] == "offered"
    for tag, dev in expected.items():
        assert os.readlink(mnt / tag / "dev") == f"/dev/{dev}"
        assert json.loads((mnt / tag / "metadata").read_text())["device"] == dev
    assert mnt.stat().st_nlink == 2 + len(expected) + len(offered)


def test_sighup_applies_added_removed_and_changed_tags(make_host, tagmemfs):
    host = make_host("dcd")
    d = tagmemfs()
    mnt = d.mount_point
    _views_agree(mnt, {hg.TAG_A: "dax0.0", hg.TAG_B: "dax0.1"}, offered=[hg.TAG_C])
    # Warm every cache, including negative entries for names yet to come.
    assert not (mnt / hg.TAG_NV0).exists()
    old_b = (mnt / hg.TAG_B / "metadata").read_text()
    size_a = (mnt / hg.TAG_A / "size").read_text()

    # Next: TAG_B gone, TAG_A grows (a third extent), NVDIMM tags arrive.
    nxt = hg.Host()
    nxt.node(1, **hg.CXL_NODE_PERF)
    r = nxt.dcd_region(region_id=0, base=0x10_0000_0000, size=16 * hg.GiB)
    r.extent(offset=0, length=hg.GiB, uuid=hg.TAG_A)
    r.extent(offset=2 * hg.GiB, length=512 * hg.MiB, uuid=hg.TAG_A)
    r.extent(offset=3 * hg.GiB, length=512 * hg.MiB, uuid=hg.TAG_A)
    r.dax(dev_id=0, uuid=hg.TAG_A)
    nv = nxt.nvdimm_region(region_id=1, base=0x20_0000_0000, size=16 * hg.GiB)
    nv.namespace(ns_id=0, uuid=hg.TAG_NV0, size=4 * hg.GiB, infoblock_uuid=hg.INFOBLOCK_NV0)
    host.rewrite(nxt)
    d.rescan()

    _views_agree(mnt, {hg.TAG_A: "dax0.0", hg.TAG_NV0: "dax1.0"})
    assert not (mnt / hg.TAG_B).exists() and old_b
    new_size = (mnt / hg.TAG_A / "size").read_text()
    assert new_size != size_a and new_size == f"{2 * hg.GiB}\n"
    assert (mnt / hg.TAG_A / "size").stat().st_size == len(new_size)
    assert len(json.loads((mnt / hg.TAG_A / "metadata").read_text())["devices"][0]
               ["extents"]) == 3
    assert "tag bbbbbbbb-0000-4000-8000-00000000000b removed" in d.text()


def test_sighup_moves_a_tag_to_another_device(make_host, tagmemfs):
    host = make_host("dcd")
    d = tagmemfs()
    mnt = d.mount_point
    data_a = mnt / hg.TAG_A / "data"
    old_rdev = data_a.stat().st_rdev
    nxt = hg.Host()
    r = nxt.dcd_region(region_id=0, base=0x10_0000_0000, size=16 * hg.GiB)
    r.extent(offset=0, length=hg.GiB, uuid=hg.TAG_B)
    r.extent(offset=hg.GiB, length=hg.GiB, uuid=hg.TAG_A)
    r.dax(dev_id=0, uuid=hg.TAG_B)
    r.dax(dev_id=1, uuid=hg.TAG_A)
    host.rewrite(nxt)
    d.rescan()
    assert os.readlink(mnt / hg.TAG_A / "dev") == "/dev/dax0.1"
    assert data_a.stat().st_rdev != old_rdev
    assert os.minor(data_a.stat().st_rdev) == os.minor(os.stat("/dev/dax0.1").st_rdev)


def test_sighup_reloads_grants_and_keeps_a_good_config_over_a_bad_one(make_host, tagmemfs,
                                                                       tmp_path):
    make_host("dcd")
    conf = write_config(tmp_path, "")
    d = tagmemfs("-c", conf)
    data = d.mount_point / hg.TAG_A / "data"
    assert open_errno_as(NOBODY, NOBODY, data) == "EACCES"
    conf.write_text(f"[tag {hg.TAG_A}]\nowner = {NOBODY}\n")
    d.rescan()
    assert data.stat().st_uid == NOBODY  # cached attributes were invalidated
    assert open_errno_as(NOBODY, NOBODY, data) == "ENXIO"

    conf.write_text(f"[tag {hg.TAG_A}]\nowner = {NOBODY}\nmode = 0666x\n")
    d.rescan()
    assert "keeping the previous configuration" in d.text()
    assert data.stat().st_uid == NOBODY and stat.S_IMODE(data.stat().st_mode) == 0o600


def test_a_config_of_100000_sections_applies_and_a_failed_read_keeps_the_last(
        make_host, tagmemfs, tmp_path):
    """Issue 19: tagmem.conf was read as a sysfs attribute (64 KiB at most,
    about 300 sections) and a larger one was refused whole. A reload that
    cannot read the file (over its own bound, a directory) keeps the last
    configuration, with the reason in the log."""
    make_host("dcd")
    filler = "".join(f"[tag 6f1c2d3e-0000-4000-8000-{i:012x}]\nmode = 0640\n"
                     for i in range(100_000))
    conf = write_config(tmp_path, filler + f"[tag {hg.TAG_A}]\nowner = {NOBODY}\nmode = 0640\n")
    assert conf.stat().st_size > 64 * 1024
    d = tagmemfs("-c", conf)
    data = d.mount_point / hg.TAG_A / "data"
    assert data.stat().st_uid == NOBODY and stat.S_IMODE(data.stat().st_mode) == 0o640

    conf.write_text(f"[tag {hg.TAG_A}]\nmode = 0600\n")
    os.truncate(conf, 64 * 1024 * 1024 + 1)
    d.rescan()
    assert f"{conf}: larger than 67108864 bytes, the most it may have; not read" in d.text()
    assert d.text().count("keeping the previous configuration") == 1
    assert data.stat().st_uid == NOBODY and stat.S_IMODE(data.stat().st_mode) == 0o640

    conf.unlink()
    conf.mkdir()
    d.rescan()
    assert d.text().count("keeping the previous configuration") == 2
    assert data.stat().st_uid == NOBODY and stat.S_IMODE(data.stat().st_mode) == 0o640


# What tagmemfs keeps once it serves (fs/capabilities.hpp): CAP_CHOWN (0),
# CAP_FOWNER (3), CAP_SYS_ADMIN (21), CAP_MKNOD (27).
KEPT_CAPS = (1 << 0) | (1 << 3) | (1 << 21) | (1 << 27)


def capability_sets(pid: int) -> dict[str, dict[str, int]]:
    """Every thread's capability sets and no_new_privs, by thread id."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = dict(line.split(":\t", 1)
                      for line in (task / "status").read_text().splitlines() if ":\t" in line)
        out[task.name] = {k: int(fields[k], 16)
                          for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
        out[task.name]["NoNewPrivs"] = int(fields["NoNewPrivs"])
    return out


def assert_capabilities_dropped(pid: int) -> None:
    sets = capability_sets(pid)
    assert len(sets) >= 2, sets  # at least the main thread and the event thread
    if "TSAN_OPTIONS" in os.environ:
        # ThreadSanitizer's runtime starts a background thread before main
        # (the lowest thread id after the main one); capset() changes the
        # calling thread only, so that one keeps the sets it was started
        # with. Without TSan no thread exists before the drop.
        first = min((int(t) for t in sets if int(t) != pid), default=None)
        if first is not None and sets[str(first)]["CapEff"] != KEPT_CAPS:
            del sets[str(first)]
    want = {"CapInh": 0, "CapPrm": KEPT_CAPS, "CapEff": KEPT_CAPS, "CapBnd": KEPT_CAPS,
            "CapAmb": 0, "NoNewPrivs": 1}
    for tid, got in sets.items():
        assert got == want, (tid, {k: hex(v) for k, v in got.items()})


def test_the_daemon_keeps_four_capabilities_and_still_does_its_job(make_host, tagmemfs,
                                                                    tmp_path):
    """Issue 19: tagmemfs kept every capability for its whole life. Now every
    thread has CAP_CHOWN, CAP_FOWNER, CAP_SYS_ADMIN and CAP_MKNOD once it
    serves, and with them it still makes, gives away and re-modes nodes at a
    reload, and unmounts both mounts when stopped."""
    make_host("dcd")
    conf = write_config(tmp_path, "")
    d = tagmemfs("-c", conf)
    assert_capabilities_dropped(d.proc.pid)
    data = d.mount_point / hg.TAG_A / "data"
    nodes = Path(f"{d.mount_point}.nodes")
    assert data.stat().st_uid == 0 and stat.S_IMODE(data.stat().st_mode) == 0o600
    # mknod, chown and chmod of a node for another user.
    conf.write_text(f"[tag {hg.TAG_A}]\nowner = {NOBODY}\ngroup = {NOBODY}\nmode = 0640\n")
    d.rescan()
    st = data.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, NOBODY, 0o640)
    assert open_errno_as(NOBODY, NOBODY, data) == "ENXIO"  # the mode lets nobody in
    # A mode change of a node that belongs to nobody.
    conf.write_text(f"[tag {hg.TAG_A}]\nowner = {NOBODY}\nmode = 0604\n")
    d.rescan()
    st = data.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0, 0o604)
    assert "Operation not permitted" not in d.text()
    assert_capabilities_dropped(d.proc.pid)  # the threads made since, too
    assert d.stop() == 0
    assert mount_options(d.mount_point) is None and mount_options(nodes) is None


def test_sighup_revokes_a_grant(make_host, tagmemfs, tmp_path):
    make_host("dcd")
    conf = write_config(tmp_path, f"[tag {hg.TAG_A}]\nowner = {NOBODY}\n")
    d = tagmemfs("-c", conf)
    data = d.mount_point / hg.TAG_A / "data"
    assert open_errno_as(NOBODY, NOBODY, data) == "ENXIO"
    conf.write_text("")
    d.rescan()
    assert open_errno_as(NOBODY, NOBODY, data) == "EACCES"


def test_mount_options_are_enforced(make_host, tagmemfs):
    make_host("dcd")
    d = tagmemfs("-o", "noexec")
    fstype, opts, sup = mount_options(d.mount_point)
    assert fstype == "fuse.tagmem"
    assert {"ro", "nosuid", "noexec"} <= opts and "nodev" not in opts
    assert {"default_permissions", "allow_other"} <= sup


@pytest.mark.parametrize("bad", ["nodev", "suid", "rw", "exec,suid", "user_id=5",
                                 "default_permissions=0", "allow_root"])
def test_weakening_mount_options_are_refused(make_host, tmp_path, bad):
    make_host("dcd")
    mp = tmp_path / "mnt"
    r = subprocess.run([str(TAGMEMFS), "-f", "-o", bad, str(mp)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "not allowed" in r.stderr
    assert mount_options(mp) is None


def test_sigterm_and_sigint_unmount_cleanly(make_host, tagmemfs):
    make_host("dcd")
    for sig in (signal.SIGTERM, signal.SIGINT):
        d = tagmemfs()
        assert d.stop(sig) == 0
        assert mount_options(d.mount_point) is None
        assert "unmounting" in d.text()


def test_stale_mount_of_a_killed_daemon_is_recovered(make_host, tagmemfs):
    make_host("dcd")
    d = tagmemfs()
    mp = d.mount_point
    d.proc.kill()
    d.proc.wait()
    with pytest.raises(OSError) as e:
        os.stat(mp)
    assert e.value.errno == errno.ENOTCONN
    d2 = tagmemfs(mount_point=mp)
    assert "stale mount" in d2.text()
    assert sorted(os.listdir(mp)) == sorted([hg.TAG_A, hg.TAG_B, hg.TAG_C])


def test_a_live_mount_is_never_replaced(make_host, tagmemfs):
    make_host("dcd")
    d = tagmemfs()
    r = subprocess.run([str(TAGMEMFS), "-f", str(d.mount_point)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 3, r.stderr
    assert f"served by another tagmemfs, pid {d.proc.pid}" in r.stderr
    assert sorted(os.listdir(d.mount_point)) == sorted([hg.TAG_A, hg.TAG_B, hg.TAG_C])


def _second_daemon(path) -> subprocess.CompletedProcess:
    return subprocess.run([str(TAGMEMFS), "-f", "--uevents", "none", str(path)],
                          capture_output=True, text=True, timeout=30)


def test_one_daemon_per_mount_point_whatever_the_path(make_host, tagmemfs, tmp_path):
    """The lock, not a comparison of paths, refuses a second daemon: through
    a symlink, a bind mount of the parent, a relative path, a trailing slash."""
    make_host("dcd")
    d = tagmemfs()
    mp = d.mount_point
    link = mp.parent / "link"
    link.symlink_to(mp)
    parent_link = tmp_path / "parent-link"
    parent_link.symlink_to(mp.parent)
    bind = tmp_path / "bind"
    bind.mkdir()
    subprocess.run(["mount", "--bind", str(mp.parent), str(bind)], check=True)
    try:
        for path in (link, parent_link / mp.name, bind / mp.name, f"{mp}/",
                     os.path.relpath(mp)):
            r = _second_daemon(path)
            assert r.returncode == 3, (path, r.stderr)
            assert f"pid {d.proc.pid}" in r.stderr and f"{mp.name}.lock" in r.stderr, r.stderr
        # The bind path is a different mount point for the kernel: nothing may
        # have been mounted there, and the first daemon still serves.
        assert mount_options(bind / mp.name) is None
    finally:
        subprocess.run(["umount", "-l", str(bind)], check=False)
    assert sorted(os.listdir(mp)) == sorted([hg.TAG_A, hg.TAG_B, hg.TAG_C])
    assert d.stop() == 0
    # The lock died with its holder: the mount point is free again.
    d2 = tagmemfs(mount_point=mp)
    assert d2.stop() == 0


def test_the_lock_survives_daemonizing(make_host, tmp_path):
    make_host("dcd")
    mp = tmp_path / "mnt"
    r = subprocess.run([str(TAGMEMFS), str(mp)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    try:
        pids = subprocess.run(["pgrep", "-f", f"tagmemfs {mp}"], capture_output=True,
                              text=True).stdout.split()
        assert len(pids) == 1
        # The parent that took the lock has exited; its child holds it.
        r = _second_daemon(mp)
        assert r.returncode == 3 and f"pid {pids[0]}" in r.stderr, r.stderr
        assert (mp.parent / "mnt.lock").read_text() == f"{pids[0]}\n"
    finally:
        subprocess.run(["umount", str(mp)], check=False)


@pytest.mark.parametrize("plant", ["symlink", "fifo", "not-root"])
def test_a_planted_lock_file_is_refused(make_host, tmp_path, plant):
    make_host("dcd")
    mp = tmp_path / "mnt"
    lock = tmp_path / "mnt.lock"
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    if plant == "symlink":
        lock.symlink_to(victim)
    elif plant == "fifo":
        os.mkfifo(lock)
    else:
        lock.write_text("")
        os.chown(lock, NOBODY, NOBODY)
    r = _second_daemon(mp)
    assert r.returncode == 1 and "mnt.lock" in r.stderr, r.stderr
    assert victim.read_text() == "precious\n"
    assert mount_options(mp) is None


def test_signals_during_startup_leave_no_mount(make_host, tmp_path):
    """SIGTERM, SIGINT or SIGHUP at any moment of startup: the daemon either
    dies before mounting or unmounts cleanly; never a dead mount."""
    make_host("mixed")
    mp = tmp_path / "mnt"
    nodes = Path(f"{mp}.nodes")
    sigs = [signal.SIGTERM, signal.SIGINT]
    for i in range(60):
        sig = sigs[i % 2]
        log = open(tmp_path / "start.log", "w")
        p = subprocess.Popen([str(TAGMEMFS), "-f", "--uevents", "none", str(mp)], stdout=log,
                             stderr=subprocess.STDOUT)
        time.sleep((i % 20) * 0.004)
        if i % 3 == 0:
            p.send_signal(signal.SIGHUP)  # a rescan request must not kill it either
        p.send_signal(sig)
        rc = p.wait(30)
        log.close()
        text = (tmp_path / "start.log").read_text()
        # Killed by the default action before main() blocked the signal, or
        # a clean exit.
        assert rc in (0, -sig, -signal.SIGHUP), (i, rc, text)
        assert mount_options(mp) is None, (i, text)
        assert mount_options(nodes) is None, (i, text)
        if "mounted" in text:
            assert "unmounting" in text, text


def test_invalid_config_at_start_refuses_to_mount(make_host, tmp_path):
    make_host("dcd")
    conf = write_config(tmp_path, f"[tag {hg.TAG_A}]\nmode = 7777\n")
    mp = tmp_path / "mnt"
    r = subprocess.run([str(TAGMEMFS), "-f", "-c", str(conf), str(mp)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1 and "mode = 7777" in r.stderr and "not mounting" in r.stderr
    assert mount_options(mp) is None


def test_background_mode_daemonizes_and_exits_on_unmount(make_host, tmp_path):
    make_host("dcd")
    mp = tmp_path / "mnt"
    r = subprocess.run([str(TAGMEMFS), str(mp)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert mount_options(mp)[0] == "fuse.tagmem"
    assert sorted(os.listdir(mp)) == sorted([hg.TAG_A, hg.TAG_B, hg.TAG_C])
    pids = subprocess.run(["pgrep", "-f", f"tagmemfs {mp}"], capture_output=True,
                          text=True).stdout.split()
    assert len(pids) == 1
    subprocess.run(["umount", str(mp)], check=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pids[0]}").exists():
        time.sleep(0.05)
    assert not Path(f"/proc/{pids[0]}").exists()


def test_device_nodes_are_read_only_and_hold_only_ready_tags(make_host, tagmemfs):
    make_host("mixed")
    d = tagmemfs()
    nodes = Path(f"{d.mount_point}.nodes")
    assert sorted(os.listdir(nodes)) == sorted([hg.TAG_A, hg.TAG_B, hg.TAG_NV0, hg.TAG_NV1])
    fstype, opts, _ = mount_options(nodes)
    assert fstype == "tmpfs" and {"ro", "nosuid", "noexec"} <= opts and "nodev" not in opts
    node = nodes / hg.TAG_A
    for attempt in (lambda: os.chmod(node, 0o666), lambda: os.chown(node, NOBODY, NOBODY),
                    lambda: os.unlink(node), lambda: os.mknod(nodes / "x", 0o666 | stat.S_IFCHR,
                                                              os.makedev(1, 3)),
                    lambda: os.rename(node, nodes / "y")):
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno == errno.EROFS
    assert stat.S_IMODE(node.stat().st_mode) == 0o600 and node.stat().st_uid == 0


def test_nodes_go_with_the_daemon_and_come_back(make_host, tagmemfs):
    make_host("dcd")
    d = tagmemfs()
    nodes = Path(f"{d.mount_point}.nodes")
    assert mount_options(nodes) is not None
    d.proc.kill()
    d.proc.wait()
    d2 = tagmemfs(mount_point=d.mount_point)  # stale FUSE and nodes mounts recovered
    assert "previous tagmemfs" in d2.text()
    assert sorted(os.listdir(nodes)) == sorted([hg.TAG_A, hg.TAG_B])
    assert d2.stop() == 0
    assert mount_options(nodes) is None and mount_options(d.mount_point) is None


# The build tree's copy of the configured helper: it starts the build tree's
# tagmemfs, a path fixed at configure time (mount-helper/CMakeLists.txt).
HELPER = TAGMEMFS.parents[1] / "mount-helper" / "mount.tagmem"
INSTALLED_HELPER = HELPER.parent / "install" / "mount.tagmem"


def helper(*args, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(HELPER), *map(str, args)], capture_output=True, text=True,
                          timeout=30, env=env, **kw)


def test_mount_helper_translates_mount_options(make_host, tmp_path):
    make_host("dcd")
    mp = tmp_path / "mnt"
    conf = write_config(tmp_path, f"[tag {hg.TAG_A}]\nowner = {NOBODY}\n")
    fake = helper("tagmem", mp, "-f", "-o",
                  f"rw,defaults,noexec,config={conf},x-systemd.automount,log-level=debug,"
                  "nofail,_netdev,comment=x,auto,noauto,nouser", check=True)
    assert fake.stdout.split() == [str(TAGMEMFS), "--config", str(conf), "--log-level", "debug",
                                   "-o", "noexec", str(mp)]
    r = helper("tagmem", mp, "-o", f"noexec,config={conf}")
    assert r.returncode == 0, r.stderr
    fstype, opts, _ = mount_options(mp)
    assert fstype == "fuse.tagmem" and "noexec" in opts
    assert (mp / hg.TAG_A / "data").stat().st_uid == NOBODY
    subprocess.run(["umount", str(mp)], check=True)
    # The CDI options, for an fstab mount beside the service (one CDI
    # directory serves one daemon).
    fake = helper("tagmem", mp, "-f", "-o", "cdi-dir=/run/cdi-fstab,noexec")
    assert fake.stdout.split() == [str(TAGMEMFS), "--cdi-dir", "/run/cdi-fstab", "-o", "noexec",
                                   str(mp)]
    fake = helper("tagmem", mp, "-f", "-o", "no-cdi,log-level=info")
    assert fake.stdout.split() == [str(TAGMEMFS), "--no-cdi", "--log-level", "info", str(mp)]
    fake = helper("tagmem", mp, "-f", "-o", "cdi-dir=")
    assert fake.stdout.split() == [str(TAGMEMFS), "--cdi-dir", str(mp)]  # empty: none
    # What tagmemfs refuses, the helper does not smuggle through.
    r = helper("tagmem", mp, "-o", "nodev")
    assert r.returncode == 2 and "not allowed" in r.stderr
    assert mount_options(mp) is None


@pytest.mark.parametrize("how", ["mount.tagmem", "by hand"])
def test_a_daemonized_tagmemfs_keeps_four_capabilities(make_host, tmp_path, how):
    """Not only under the unit: in the background, started by mount(8)'s
    helper or from a shell, every thread has the four capabilities."""
    make_host("dcd")
    mp = tmp_path / "mnt"
    r = (helper("tagmem", mp) if how == "mount.tagmem" else
         subprocess.run([str(TAGMEMFS), str(mp)], capture_output=True, text=True, timeout=30))
    assert r.returncode == 0, r.stderr
    try:
        pids = subprocess.run(["pgrep", "-f", f"tagmemfs {mp}$"], capture_output=True,
                              text=True).stdout.split()
        assert len(pids) == 1
        assert_capabilities_dropped(int(pids[0]))
        assert sorted(os.listdir(mp)) == sorted([hg.TAG_A, hg.TAG_B, hg.TAG_C])
    finally:
        subprocess.run(["umount", str(mp)], check=True)
    deadline = time.monotonic() + 30  # a bound for a hang, not a timing
    while Path(f"/proc/{pids[0]}").exists():
        assert time.monotonic() < deadline, "tagmemfs did not exit after the unmount"
        time.sleep(0.05)
    assert mount_options(Path(f"{mp}.nodes")) is None  # unmounted at its exit


@pytest.mark.parametrize("argv", [
    ["tagmem", "MP", "-o", "noexec", "-f"],
    ["tagmem", "MP", "-f", "-n", "-s", "-v", "-o", "noexec"],
    ["tagmem", "MP", "-sfnv", "-o", "noexec"],
    ["tagmem", "MP", "-fonoexec"],
    ["tagmem", "MP", "-vfo", "noexec"],
    ["tagmem", "MP", "-ft", "tagmem", "-o", "noexec"],
    ["tagmem", "MP", "-f", "-onoexec", "-t", "tagmem"],
    ["tagmem", "MP", "-f", "-o", "noexec", "-ttagmem"],
    ["tagmem", "MP", "-f", "-t", "fuse.tagmem", "-o", "noexec"],
    ["-f", "-o", "noexec", "tagmem", "MP"],
    ["/dev/whatever", "MP", "-o", "rw", "-o", "noexec", "-f"],
])
def test_mount_helper_takes_every_form_mount_passes(tmp_path, argv):
    mp = tmp_path / "mnt"
    r = helper(*[str(mp) if a == "MP" else a for a in argv])
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1].split() == [str(TAGMEMFS), "-o", "noexec", str(mp)]


@pytest.mark.parametrize("argv, message", [
    (["tagmem"], "usage"),
    ([], "usage"),
    (["tagmem", "MP", "extra"], "usage"),
    (["tagmem", "MP", "-o"], "usage"),
    (["tagmem", "MP", "-x"], "usage"),
    (["tagmem", "MP", "-fx"], "usage"),
    (["tagmem", "MP", "-t"], "usage"),
    (["tagmem", "MP", "-sN1"], "-N"),
    (["tagmem", "MP", "-t", "ext4"], "not tagmem"),
    (["tagmem", "MP", "-N", "/proc/1/ns/mnt"], "-N"),
    (["tagmem", "MP", "-o", "user"], "root only"),
    (["tagmem", "MP", "-o", "noexec,users"], "root only"),
    (["tagmem", "MP", "-o", "owner"], "root only"),
    (["tagmem", "MP", "-o", "group,noexec"], "root only"),
])
def test_mount_helper_refuses_what_it_cannot_honour(tmp_path, argv, message):
    mp = tmp_path / "mnt"
    r = helper("-f", *[str(mp) if a == "MP" else a for a in argv])
    assert r.returncode == 1 and message in r.stderr, r.stderr
    assert r.stdout == "" and mount_options(mp) is None


def test_mount_helper_runs_only_its_own_tagmemfs(tmp_path):
    """Neither $TAGMEMFS nor a tagmemfs earlier in PATH is what mount(8),
    running as root, starts."""
    mp = tmp_path / "mnt"
    evil = tmp_path / "bin"
    evil.mkdir()
    (evil / "tagmemfs").write_text("#!/bin/sh\ntouch " + str(tmp_path / "pwned") + "\n")
    (evil / "tagmemfs").chmod(0o755)
    env = {**os.environ, "TAGMEMFS": str(evil / "tagmemfs"), "PATH": f"{evil}:/usr/bin:/bin"}
    r = helper("tagmem", mp, "-f", "-o", "noexec", env=env)
    assert r.stdout.split()[0] == str(TAGMEMFS)
    r = helper("tagmem", mp, "-o", "nodev", env=env)  # runs tagmemfs, which refuses
    assert r.returncode == 2 and not (tmp_path / "pwned").exists()
    installed = INSTALLED_HELPER.read_text()
    assert "TAGMEMFS='/" in installed and "/sbin/tagmemfs'" in installed
    assert str(TAGMEMFS.parents[1]) not in installed and "${TAGMEMFS" not in installed


def test_mount_helper_does_not_glob_options(tmp_path):
    (tmp_path / "noexec").touch()  # a glob that matched would turn into options
    (tmp_path / "config=x").touch()
    mp = tmp_path / "mnt"
    r = helper("tagmem", mp, "-f", "-o", "noatime,*,no?xec,[c]onfig=*", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(TAGMEMFS), "-o", "noatime,*,no?xec,[c]onfig=*", str(mp)]
    # tagmemfs refuses them as options it does not know.
    r = helper("tagmem", mp, "-o", "*", cwd=tmp_path)
    assert r.returncode == 2 and "'*' is not allowed" in r.stderr, r.stderr
    # -s (sloppy) drops what it does not know instead, never what it knows.
    r = helper("tagmem", mp, "-s", "-f", "-o", "*,noexec,frobnicate", cwd=tmp_path)
    assert r.stdout.split() == [str(TAGMEMFS), "-o", "noexec", str(mp)]
    assert "ignoring option '*'" in r.stderr and "ignoring option 'frobnicate'" in r.stderr


def test_mount_helper_keeps_odd_values_whole(tmp_path):
    mp = tmp_path / "mnt point"
    r = helper("tagmem", mp, "-f", "-o", "config=/etc/a b/c d.conf,socket=/run/x y")
    assert r.returncode == 0, r.stderr
    # The fake run echoes; the real command line is checked through -v's
    # twin: every value stays one argument (the shell splits only on ',').
    assert "--config /etc/a b/c d.conf --socket /run/x y" in r.stdout


def _stats(sock: Path) -> dict:
    import socket as so
    c = so.socket(so.AF_UNIX, so.SOCK_STREAM)
    c.connect(str(sock))
    c.sendall(b'{"op":"stats"}\n')
    c.settimeout(5)
    data = b""
    while chunk := c.recv(65536):
        data += chunk
    c.close()
    return json.loads(data)["requests"]


def _open_requests(mnt: Path, rounds=3) -> tuple[int, int]:
    """(OPENDIR, OPEN) requests for `rounds` listings and reads of one tag."""
    sock = Path(f"{mnt}.sock")
    before = _stats(sock)
    for _ in range(rounds):
        assert "size" in os.listdir(mnt / hg.TAG_A)
        assert (mnt / hg.TAG_A / "size").read_text() == f"{hg.GiB + 512 * hg.MiB}\n"
    after = _stats(sock)
    return after["opendir"] - before["opendir"], after["open"] - before["open"]


def test_opens_cost_no_request_where_the_kernel_allows(make_host, tagmemfs):
    make_host("dcd")
    d = tagmemfs()
    _open_requests(d.mount_point, 1)  # the first of each is answered ENOSYS
    assert _open_requests(d.mount_point) == (0, 0)
    assert "asks before every" not in d.text()


def test_opens_are_answered_on_a_kernel_without_zero_message_opens(make_host, tmp_path):
    """Before 4.20 (files) and 5.1 (directories) an ENOSYS from open fails
    the open: tagmemfs replies for real when init does not offer the
    capabilities. The shim hides them from this kernel's offer."""
    make_host("dcd")
    shim = TAGMEMFS.parents[1] / "tests" / "libold_kernel_shim.so"
    mp = Path(tempfile.mkdtemp(prefix="tagmem-old-", dir="/tmp"))
    os.chmod(mp, 0o755)
    log_path = tmp_path / "old.log"
    with open(log_path, "w") as log:
        p = subprocess.Popen([str(TAGMEMFS), "-f", "--uevents", "none", str(mp)], stdout=log,
                             stderr=subprocess.STDOUT, env=preload_env(shim))
    try:
        deadline = time.monotonic() + 30
        while " mounted " not in log_path.read_text():
            assert p.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.02)
        os.listdir(mp)  # the INIT exchange is over once a request was served
        assert "asks before every open and every opendir" in log_path.read_text()
        assert _open_requests(mp) == (3, 3)
        subprocess.run(["ls", "-lR", str(mp)], capture_output=True, check=True)
        found = subprocess.run(["find", str(mp)], capture_output=True, text=True, check=True)
        assert len(found.stdout.splitlines()) == 1 + 2 * 6 + 3
        r = run_as(NOBODY, NOBODY, f"import os; print(os.listdir({str(mp / hg.TAG_A)!r}), "
                                   f"open({str(mp / hg.TAG_A / 'shareable')!r}).read())")
        # TAG_A is DCD: shareable by default (issue 19).
        assert r.returncode == 0 and "metadata" in r.stdout and "] 1\n" in r.stdout, r.stderr
        assert open_errno(mp / hg.TAG_A / "metadata", os.O_WRONLY) == errno.EROFS
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
        shutil.rmtree(mp, ignore_errors=True)


def test_owners_from_huge_user_database_entries(make_host, tagmemfs, tmp_path):
    """A group of thousands of members, a user with a huge gecos: both
    outgrow getgrnam_r/getpwnam_r's first buffer (ERANGE) and must still
    resolve. Fake /etc/group and /etc/passwd are bind-mounted in this
    private mount namespace only."""
    make_host("dcd")
    members = ",".join(f"member{i:05d}" for i in range(6000))  # ~70 KB
    group = tmp_path / "group"
    group.write_text(Path("/etc/group").read_text() + f"hugegroup:x:4343:{members}\n")
    passwd = tmp_path / "passwd"
    passwd.write_text(Path("/etc/passwd").read_text() +
                      f"hugeuser:x:4242:4343:{'g' * 60000}:/nonexistent:/usr/sbin/nologin\n")
    mounted = []
    try:
        for fake, real in ((group, "/etc/group"), (passwd, "/etc/passwd")):
            subprocess.run(["mount", "--bind", str(fake), real], check=True)
            mounted.append(real)
        conf = write_config(tmp_path, f"[tag {hg.TAG_A}]\nowner = hugeuser\n"
                                      f"group = hugegroup\nmode = 0060\n")
        d = tagmemfs("-c", conf)
        data = (d.mount_point / hg.TAG_A / "data").stat()
        assert (data.st_uid, data.st_gid) == (4242, 4343), d.text()
        assert open_errno_as(1234, 4343, d.mount_point / hg.TAG_A / "data") == "ENXIO"
        shown = json.loads(run_tagmem("show", "--json", hg.TAG_A, config=conf).stdout)
        assert shown["access"]["uid"] == 4242 and shown["access"]["gid"] == 4343
    finally:
        for real in reversed(mounted):
            subprocess.run(["umount", real], check=False)


@pytest.mark.parametrize("line, message", [
    ("owner = 4294967296", "out of range"),
    ("owner = 4294967295", "out of range"),
    ("group = 99999999999999999999999", "out of range"),
    ("owner = ro\x1b[2Jot", "U+001B"),
    ("name = caf\udce9", "not valid UTF-8"),
])
def test_malformed_owners_and_names_stop_the_daemon_with_a_clear_message(make_host, tmp_path,
                                                                          line, message):
    make_host("dcd")
    conf = tmp_path / "tagmem.conf"
    conf.write_bytes(f"[tag {hg.TAG_A}]\n{line}\n".encode("utf-8", "surrogateescape"))
    mp = tmp_path / "mnt"
    r = subprocess.run([str(TAGMEMFS), "-f", "-c", str(conf), str(mp)], capture_output=True,
                       timeout=30)
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 1 and message in err and "not mounting" in err, err
    assert b"\x1b" not in r.stderr
    assert mount_options(mp) is None
