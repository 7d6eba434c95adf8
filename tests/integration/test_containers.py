# SPDX-License-Identifier: Apache-2.0
"""Containers: tags handed to real podman containers (runc) through the CDI
spec tagmemfs keeps, on synthetic hosts.

The dax nodes of a synthetic host carry the real `dax` major, so an open that
reaches device_dax fails with ENXIO: inside a container that proves the data
link resolved to a node with the right device number and that the device
cgroup let the open through. (ENOENT: the link dangles; EPERM: the cgroup
refused; EACCES: the node's owner and mode refused.)

Podman cannot run inside the synthetic host (there is no cgroup fs in its
/sys), so each podman command runs in a mount namespace of its own where the
synthetic /sys, /dev (and the udev fixture's /run) are lifted off again; the
tagmemfs mount under /tmp stays visible there. No image can be pulled: the
image is imported from a tarball holding a static busybox and probe.c.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import hostgen as hg
import pytest
import conftest
from conftest import run_tagmem, write_config

HERE = Path(__file__).resolve().parent
KIND = "tagmem.io/tag"
IMAGE = "localhost/tagmem-test:cdi"
# Debian's copy of the CDI schema (golang-github-container-orchestrated-
# devices-container-device-interface-dev, installed by install-deps.sh).
SCHEMA = Path("/usr/share/gocode/src/github.com/container-orchestrated-devices/"
              "container-device-interface/schema/schema.json")
NOBODY = 65534
GiB, MiB = hg.GiB, hg.MiB
TAG_X = "7e570000-0000-4000-8000-0000000000e1"
# The build tree's mount.tagmem (it starts the build tree's tagmemfs).
HELPER = conftest.TAGMEMFS.parents[1] / "mount-helper" / "mount.tagmem"


def host_with(tags: dict[int, str]) -> tuple[hg.Host, dict[str, str]]:
    """One DC region with a 256 MiB devdax device dax0.<i> per tag; the
    devices' sysfs paths (for uevents) by tag."""
    h = hg.Host()
    h.node(1, **hg.CXL_NODE_PERF)
    r = h.dcd_region(region_id=0, base=0x10_0000_0000, size=16 * GiB)
    paths = {}
    for i, tag in tags.items():
        r.extent(offset=i * GiB, length=256 * MiB, uuid=tag, index=i)
        paths[tag] = "/" + r.dax(dev_id=i, uuid=tag).sysfs_dir
    return h, paths


# -- podman ----------------------------------------------------------------

def _top_mounts() -> dict[str, tuple[str, str]]:
    """mount point -> (fstype, source) of the top mount, from mountinfo."""
    out = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, post = line.split(" - ")
        fstype, source = post.split()[:2]
        out[pre.split()[4]] = (fstype, source)
    return out


def podman_argv(cdi_dir: Path | None, *args: str) -> list[str]:
    """podman in a mount namespace where the host's real /sys, /dev and /run
    are back (the synthetic ones hide the cgroup fs and podman's state), with
    the daemon's CDI directory as /run/cdi."""
    top = _top_mounts()
    lift = []
    if top.get("/run", ("", ""))[1] == "fake-run":
        lift.append("umount -l /run")
    if top.get("/dev", ("", ""))[1] == "hostgen-dev":
        lift.append("umount -R -l /dev")
    if top.get("/sys", ("sysfs", ""))[0] != "sysfs":
        lift.append("umount -l /sys")
    if cdi_dir is not None:
        lift += ["mkdir -p /run/cdi", f"mount --bind '{cdi_dir}' /run/cdi"]
    script = "set -e; " + "; ".join(lift + ['exec "$@"'])
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "podman",
            "podman", "--runtime", "runc", *args]


def podman(cdi_dir: Path | None, *args: str, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(podman_argv(cdi_dir, *args), capture_output=True, text=True,
                          timeout=timeout)


RUN_OPTS = ["--rm", "--network", "none", "--ulimit", "nofile=20000:20000", "--ulimit",
            "nproc=4096:4096"]


def in_container(cdi_dir: Path, devices: list[str], script: str, *opts: str
                 ) -> subprocess.CompletedProcess:
    argv = ["run", *RUN_OPTS, *opts]
    for d in devices:
        argv += ["--device", f"{KIND}={d}"]
    return podman(cdi_dir, *argv, IMAGE, "/bin/sh", "-c", script)


def lines_of(r: subprocess.CompletedProcess) -> list[str]:
    assert r.returncode == 0, f"podman exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r.stdout.splitlines()


@pytest.fixture(scope="session")
def image(tmp_path_factory):
    """The test image: a static busybox and the probe, imported by podman."""
    for tool in ("podman", "runc"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: scripts/install-deps.sh installs it")
    work = tmp_path_factory.mktemp("image")
    root = work / "rootfs"
    (root / "bin").mkdir(parents=True)
    subprocess.run(["cc", "-static", "-O2", "-Wall", "-Werror", "-o", str(root / "probe"),
                    str(HERE / "container" / "probe.c")], check=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    for applet in ("sh", "ls", "cat", "env", "readlink", "stat", "sleep", "id", "tr"):
        (root / "bin" / applet).symlink_to("busybox")
    tar = work / "rootfs.tar"
    with tarfile.open(tar, "w") as t:
        t.add(root, arcname=".")
    r = podman(None, "import", str(tar), IMAGE)
    assert r.returncode == 0, r.stderr
    yield IMAGE
    podman(None, "rmi", "-f", IMAGE)


@pytest.fixture
def cdi_dir(tmp_path):
    """The daemon's --cdi-dir (it creates it), seen by podman as /run/cdi."""
    return tmp_path / "cdi"


def spec_files(cdi_dir: Path) -> list[Path]:
    return sorted(f for f in cdi_dir.glob("tagmem-*.json") if not f.is_symlink())


def spec_of(cdi_dir: Path) -> dict:
    """The per-tag spec files merged, as a CDI registry merges them: in file
    (tag) order, this is the one spec `tagmem cdi` prints."""
    files = [json.loads(f.read_text()) for f in spec_files(cdi_dir)]
    for f in files:
        validate(f)
        assert f["cdiVersion"] == "0.5.0" and f["kind"] == KIND
    return {"cdiVersion": "0.5.0", "kind": KIND,
            "devices": [d for f in files for d in f["devices"]]}


def device_names(spec: dict) -> list[str]:
    return [d["name"] for d in spec["devices"]]


eventually = conftest.eventually


# -- the spec ----------------------------------------------------------------

def validate(spec: dict) -> None:
    import jsonschema
    if not SCHEMA.is_file():
        pytest.fail(f"{SCHEMA} is missing: scripts/install-deps.sh installs it")
    schema = json.loads(SCHEMA.read_text())
    resolver = jsonschema.RefResolver(base_uri=SCHEMA.parent.as_uri() + "/", referrer=schema)
    jsonschema.validate(spec, schema, resolver=resolver)


def test_the_schema_check_can_fail():
    import jsonschema
    with pytest.raises(jsonschema.ValidationError):
        validate({"cdiVersion": "0.5.0", "kind": KIND,
                  "devices": [{"name": "x", "containerEdits": {"deviceNodes": [{}]}}]})


def test_spec_in_var_run_cdi_follows_the_tags(make_host, tagmemfs, tmp_path):
    # The default directory, on a tmpfs of this test's mount namespace.
    os.makedirs("/run/cdi", exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "test-cdi", "/run/cdi"],
                   check=True)
    try:
        make_host("dcd")  # TAG_A and TAG_B ready, TAG_C only offered
        d = tagmemfs(cdi=True)  # no CDI option: the default directory
        # One file per usable tag, and no temporary file left.
        names = [f"tagmem-{t}.json" for t in sorted([hg.TAG_A, hg.TAG_B])]
        assert sorted(os.listdir("/run/cdi")) == [".tagmem.lock"] + names
        spec = spec_of(Path("/var/run/cdi"))
        assert device_names(spec) == sorted([hg.TAG_A, hg.TAG_B])
        for name in names:
            assert (Path("/var/run/cdi", name).stat().st_mode & 0o777) == 0o644
        # `tagmem cdi` prints the same devices, in one spec.
        r = run_tagmem("cdi", "--mount-point", d.mount_point)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == spec
        d.stop()
        assert os.listdir("/run/cdi") == []  # removed at a clean stop
    finally:
        subprocess.run(["umount", "-l", "/run/cdi"], check=False)


def test_cdi_dir_options(make_host, tagmemfs, tmp_path):
    make_host("dcd")
    elsewhere = tmp_path / "some" / "cdi"
    tagmemfs("--cdi-dir", elsewhere)
    validate(spec_of(elsewhere))
    for off in (["--no-cdi"], ["--cdi-dir", ""]):
        d = tagmemfs(*off, cdi=True)
        assert "CDI spec" not in d.text()
    assert sorted(os.listdir(elsewhere)) == sorted(
        [".tagmem.lock"] + [f"tagmem-{t}.json" for t in (hg.TAG_A, hg.TAG_B)])


def test_a_change_rewrites_only_its_tags_file(make_host, tagmemfs, cdi_dir, tmp_path):
    make_host("dcd")
    conf = write_config(tmp_path, f"[tag {hg.TAG_A}]\nmode = 0600\n")
    d = tagmemfs("--config", conf, "--cdi-dir", cdi_dir)
    a, b = (cdi_dir / f"tagmem-{t}.json" for t in (hg.TAG_A, hg.TAG_B))
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (a, b)}
    write_config(tmp_path, f"[tag {hg.TAG_A}]\nmode = 0660\n")
    d.rescan()
    eventually(lambda: (a.stat().st_ino, a.stat().st_mtime_ns) != before[a],
               what="A's file rewritten")
    assert (b.stat().st_ino, b.stat().st_mtime_ns) == before[b]  # B's untouched
    node = json.loads(a.read_text())["devices"][0]["containerEdits"]["deviceNodes"][0]
    assert node["fileMode"] == 0o660
    # Nothing changed: nothing rewritten.
    now = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (a, b)}
    d.rescan()
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (a, b)} == now


def test_a_name_shared_or_unshared_rewrites_both_files(make_host, tagmemfs, cdi_dir, tmp_path):
    make_host("dcd")
    conf = write_config(tmp_path, f"[tag {hg.TAG_A}]\nname = pool\n")
    d = tagmemfs("--config", conf, "--cdi-dir", cdi_dir)
    assert device_names(spec_of(cdi_dir)) == ["pool", hg.TAG_A, hg.TAG_B]
    write_config(tmp_path, f"[tag {hg.TAG_A}]\nname = pool\n[tag {hg.TAG_B}]\nname = pool\n")
    d.rescan()
    eventually(lambda: device_names(spec_of(cdi_dir)) == [hg.TAG_A, hg.TAG_B],
               what="the shared name out of every file")
    write_config(tmp_path, f"[tag {hg.TAG_B}]\nname = pool\n")
    d.rescan()
    eventually(lambda: device_names(spec_of(cdi_dir)) == [hg.TAG_A, "pool", hg.TAG_B],
               what="the name back, for B")


def test_a_crashed_runs_files_are_cleaned_links_never_followed(make_host, tagmemfs, cdi_dir,
                                                               tmp_path):
    make_host("dcd")  # TAG_A and TAG_B ready
    cdi_dir.mkdir()
    gone = "7e570000-0000-4000-8000-0000000000e1"  # usable no more
    (cdi_dir / f"tagmem-{gone}.json").write_text("{}")
    (cdi_dir / "tagmem.json").write_text("{}")  # the single spec of older versions
    (cdi_dir / ".tagmem.json.tmp").write_text("half")  # the temporary name of older versions
    (cdi_dir / f".tagmem-{hg.TAG_A}.4242.tmp").write_text("half")  # and of this one
    (cdi_dir / "other-vendor.json").write_text("{}")
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    gone_link = "7e570000-0000-4000-8000-0000000000e2"
    (cdi_dir / f"tagmem-{gone_link}.json").symlink_to(victim)
    (cdi_dir / f"tagmem-{hg.TAG_A}.json").symlink_to(victim)
    d = tagmemfs("--cdi-dir", cdi_dir)
    assert sorted(os.listdir(cdi_dir)) == sorted(
        [".tagmem.lock", "other-vendor.json", f"tagmem-{gone_link}.json"] +
        [f"tagmem-{t}.json" for t in (hg.TAG_A, hg.TAG_B)])
    assert victim.read_text() == "keep me"  # neither written through nor removed
    assert (cdi_dir / f"tagmem-{gone_link}.json").is_symlink()  # not ours: left
    assert not (cdi_dir / f"tagmem-{hg.TAG_A}.json").is_symlink()  # replaced, not followed
    assert device_names(spec_of(cdi_dir)) == [hg.TAG_A, hg.TAG_B]
    d.stop()
    assert victim.read_text() == "keep me"
    assert sorted(os.listdir(cdi_dir)) == ["other-vendor.json", f"tagmem-{gone_link}.json"]


def spec_texts(cdi_dir: Path) -> dict[str, str]:
    return {f.name: f.read_text() for f in spec_files(cdi_dir)}


def test_two_daemons_never_share_a_cdi_dir(make_host, tagmemfs, cdi_dir, tmp_path):
    """The service and an fstab (mount.tagmem) instance on another mount
    point, both given one CDI directory: the second must neither rewrite the
    first's specs (their hostPath) nor remove them when it stops."""
    make_host("dcd")  # TAG_A and TAG_B ready
    first = tagmemfs("--cdi-dir", cdi_dir)
    before = spec_texts(cdi_dir)
    assert len(before) == 2 and all(str(first.mount_point) in t for t in before.values())
    second = tagmemfs("--cdi-dir", cdi_dir)
    assert f"CDI directory {cdi_dir} is kept by the tagmemfs of {first.mount_point}" in \
        second.text()
    assert spec_texts(cdi_dir) == before
    assert second.stop() == 0
    assert spec_texts(cdi_dir) == before  # the first's, still there
    # mount.tagmem gives an fstab instance a directory of its own.
    own = tmp_path / "cdi-own"
    mp = tmp_path / "mnt-fstab"
    r = subprocess.run([str(HELPER), "tagmem", str(mp), "-o", f"cdi-dir={own}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    try:
        mine = spec_texts(own)
        assert sorted(mine) == sorted(before)
        assert all(f'"hostPath":"{mp}/' in t for t in mine.values())
        assert spec_texts(cdi_dir) == before
    finally:
        subprocess.run(["umount", str(mp)], check=True)
    # Stopped cleanly, the first leaves nothing behind, its lock included.
    assert first.stop() == 0
    assert os.listdir(cdi_dir) == []
    # A stopped owner's directory is free: a new daemon takes it.
    third = tagmemfs("--cdi-dir", cdi_dir)
    assert all(str(third.mount_point) in t for t in spec_texts(cdi_dir).values())
    assert len(spec_texts(cdi_dir)) == 2


def data_node(spec_file: Path) -> tuple[int, int]:
    node = json.loads(spec_file.read_text())["devices"][0]["containerEdits"]["deviceNodes"][0]
    return node["major"], node["minor"]


def test_a_tag_that_goes_revokes_its_cdi_devices_on_the_watch_socket(make_host, tagmemfs,
                                                                     cdi_dir, tmp_path):
    """A container holds the device number its tag had; the kernel gives
    it to the next dax device. Without a container: the number leaves the
    spec with the tag, the next tag's spec may carry the very same number,
    and the tag's removal on the watch socket (and in `tagmem watch`) names
    the CDI devices to stop and the number their containers hold."""
    conf = write_config(tmp_path, f"[tag {hg.TAG_A}]\nname = pool\n")
    host = make_host(host_with({0: hg.TAG_A, 1: hg.TAG_B})[0])
    d = tagmemfs("--cdi-dir", cdi_dir, "--config", conf, "--uevents", "none")
    sock = Path(str(d.mount_point) + ".sock")
    a_file = cdi_dir / f"tagmem-{hg.TAG_A}.json"
    a_major, a_minor = data_node(a_file)
    watcher = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    watcher.connect(str(sock))
    watcher.settimeout(30)  # a line that never comes fails rather than hangs
    watcher.sendall(b'{"op":"watch"}\n')
    lines = watcher.makefile("r")
    while json.loads(lines.readline())["event"] != "snapshot-end":
        pass
    cli = subprocess.Popen([str(conftest.TAGMEM), "watch", "--snapshot", "--socket", str(sock)],
                           stdout=subprocess.PIPE, text=True)
    # Its snapshot printed: its changes are the ones after this.
    assert sorted(cli.stdout.readline().split()[:2] for _ in range(2)) == sorted(
        [["exists", hg.TAG_A], ["exists", hg.TAG_B]])
    # A goes; a new tag X gets A's device, and with it A's number.
    host.rewrite(host_with({0: TAG_X, 1: hg.TAG_B})[0])
    d.rescan()
    events = {}
    while len(events) < 2:
        e = json.loads(lines.readline())
        events[(e["event"], e["tag"])] = e
    removed = events[("removed", hg.TAG_A)]
    assert removed["cdi_revoked"] == {
        "devices": [f"{KIND}={hg.TAG_A}", f"{KIND}=pool"], "devno": f"{a_major}:{a_minor}"}
    assert "cdi_revoked" not in events[("added", TAG_X)]
    assert not a_file.exists()
    assert data_node(cdi_dir / f"tagmem-{TAG_X}.json") == (a_major, a_minor)
    out = ""
    while "removed" not in out:
        assert select.select([cli.stdout], [], [], 30)[0], "tagmem watch printed no removal"
        out = cli.stdout.readline()
    assert out.split()[:2] == ["removed", hg.TAG_A]
    assert out.rstrip().endswith(
        f"revokes {KIND}={hg.TAG_A},{KIND}=pool ({a_major}:{a_minor})"), out
    cli.terminate()
    cli.wait()
    watcher.close()


def test_tagmem_cdi_with_names(make_host, tmp_path):
    make_host("dcd")
    conf = write_config(tmp_path, f"[tag {hg.TAG_A}]\nname = scratch-pool\n"
                                  f"[tag {hg.TAG_B}]\nname = not a cdi name\n")
    r = run_tagmem("cdi", "--mount-point", "/srv/tm", "--nodes-dir", "/srv/n", config=conf)
    assert r.returncode == 0, r.stderr
    spec = json.loads(r.stdout)
    validate(spec)
    assert device_names(spec) == ["scratch-pool", hg.TAG_A, hg.TAG_B]
    nodes = [n["path"] for n in spec["devices"][0]["containerEdits"]["deviceNodes"]]
    assert nodes == [f"/srv/n/{hg.TAG_A}", "/dev/dax0.0"]
    # Only the tags named; an unknown or unusable one is refused.
    r = run_tagmem("cdi", hg.TAG_B)
    assert r.returncode == 0, r.stderr
    assert device_names(json.loads(r.stdout)) == [hg.TAG_B]
    assert run_tagmem("cdi", "7e570000-0000-4000-8000-0000000000e1").returncode == 3
    r = run_tagmem("cdi", hg.TAG_A, hg.TAG_C)  # TAG_C: offered, no device
    assert r.returncode == 5 and r.stdout == "" and hg.TAG_C in r.stderr


def test_tagmem_cdi_without_usable_tags(make_host):
    # (One host per test: make_host's teardown unmounts each host it made,
    # and a second unmount would take this namespace's real /dev with it.)
    make_host("empty")
    r = run_tagmem("cdi")
    assert r.returncode == 5 and r.stdout == "" and "no usable tag" in r.stderr


# -- real containers ---------------------------------------------------------

def test_a_container_gets_its_tag_and_nothing_else(make_host, tagmemfs, cdi_dir, image):
    make_host("dcd")
    d = tagmemfs("--cdi-dir", cdi_dir)
    mnt = d.mount_point
    a, b = f"{mnt}/{hg.TAG_A}", f"{mnt}/{hg.TAG_B}"
    minor_b = os.minor(os.stat(f"{mnt}.nodes/{hg.TAG_B}").st_rdev)
    out = lines_of(in_container(cdi_dir, [hg.TAG_A], f"""
        ls {a} | tr '\\n' ' '; echo
        cat {a}/metadata | tr -d '\n'; echo
        /probe open {a}/data
        /probe open "$TAGMEM_DATA"
        readlink {a}/dev; /probe open {a}/dev
        ls {mnt}; ls {mnt}.nodes
        /probe open {b}/data
        /probe mknod-open /tmp/b {hg.dax_major()} {minor_b}
        echo "$TAGMEM_TAG"
        """, "--cap-add", "MKNOD"))
    assert out[0].split() == ["data", "dev", "metadata", "shareable", "size"]
    meta = json.loads(out[1])
    assert meta["tag"] == hg.TAG_A and meta["device"] == "dax0.0"
    # The link resolved to a node of the right number and the cgroup let the
    # open through to device_dax (ENXIO), through `data` and through `dev`.
    assert out[2:6] == ["ENXIO", "ENXIO", "/dev/dax0.0", "ENXIO"]
    assert out[6:8] == [hg.TAG_A, hg.TAG_A]  # B invisible in the mount and the nodes
    assert out[8] == "ENOENT"
    # B's device made by hand: the device cgroup refuses it.
    assert out[9] == "EPERM"
    assert out[10] == hg.TAG_A


def test_without_cdi_a_bind_mount_is_not_enough(make_host, tagmemfs, cdi_dir, image):
    # Why CDI: the same directory bound by hand has a dangling data link,
    # and binding the nodes too meets the device cgroup.
    make_host("dcd")
    mnt = tagmemfs("--cdi-dir", cdi_dir).mount_point
    a = f"{mnt}/{hg.TAG_A}"
    r = podman(cdi_dir, "run", *RUN_OPTS, "-v", f"{a}:{a}:ro", IMAGE, "/probe", "open",
               f"{a}/data")
    assert lines_of(r) == ["ENOENT"]
    r = podman(cdi_dir, "run", *RUN_OPTS, "-v", f"{a}:{a}:ro", "-v",
               f"{mnt}.nodes:{mnt}.nodes:ro", IMAGE, "/probe", "open", f"{a}/data")
    assert lines_of(r) == ["EPERM"]


def test_owner_and_mode_hold_inside(make_host, tagmemfs, cdi_dir, tmp_path, image):
    make_host("dcd")
    conf = write_config(tmp_path, f"[tag {hg.TAG_A}]\nowner = nobody\nmode = 0600\n"
                                  f"[tag {hg.TAG_B}]\nname = pool-b\n")
    mnt = tagmemfs("--config", conf, "--cdi-dir", cdi_dir).mount_point
    node = f"{mnt}.nodes/{hg.TAG_A}"
    data = f"{mnt}/{hg.TAG_A}/data"
    script = f"stat -c '%u %a' {node}; /probe open {data}"
    assert lines_of(in_container(cdi_dir, [hg.TAG_A], script, "--user",
                                 f"{NOBODY}:{NOBODY}")) == [f"{NOBODY} 600", "ENXIO"]
    assert lines_of(in_container(cdi_dir, [hg.TAG_A], script, "--user",
                                 "1000:1000")) == [f"{NOBODY} 600", "EACCES"]
    # A tag with a configured name can be asked for by that name.
    assert lines_of(in_container(cdi_dir, ["pool-b"], "/probe open $TAGMEM_DATA")) == ["ENXIO"]


def test_tags_that_come_and_go(make_host, tagmemfs, cdi_dir, udev, image):
    host, _ = host_with({0: hg.TAG_A})
    host = make_host(host)
    d = tagmemfs("--cdi-dir", cdi_dir, "--uevents", "udev")
    mnt = d.mount_point
    assert device_names(spec_of(cdi_dir)) == [hg.TAG_A]
    # A container that has tag A, running while A goes away.
    name = f"tagmem-holder-{os.getpid()}"
    holder = subprocess.Popen(podman_argv(cdi_dir, "run", *RUN_OPTS, "--name", name, "--device",
                                          f"{KIND}={hg.TAG_A}", IMAGE, "/bin/sh", "-c",
                                          "echo up; sleep 60"),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "up"

        # A new device with a new tag: the next container gets it, with no
        # step in between.
        nxt, paths = host_with({0: hg.TAG_A, 1: TAG_X})
        host.rewrite(nxt)
        udev.send("add", paths[TAG_X], "dax")
        udev.send("bind", paths[TAG_X], "dax", DRIVER="device_dax")
        eventually(lambda: TAG_X in device_names(spec_of(cdi_dir)), what="TAG_X in the spec")
        validate(spec_of(cdi_dir))
        assert lines_of(in_container(cdi_dir, [TAG_X], "/probe open $TAGMEM_DATA")) == ["ENXIO"]

        # Tag A's device goes: A leaves the spec and cannot be requested.
        gone, _ = host_with({1: TAG_X})
        host.rewrite(gone)
        udev.send("remove", paths[hg.TAG_A], "dax")
        eventually(lambda: device_names(spec_of(cdi_dir)) == [TAG_X], what="A out of the spec")
        r = in_container(cdi_dir, [hg.TAG_A], "true")
        assert r.returncode != 0 and "unresolvable CDI devices" in r.stderr, r.stderr
        # The running container keeps its device node (runc made it in the
        # container's own root), so what it had open or mapped stays; its
        # bind of the tag directory shows the directory the daemon dropped.
        a = f"{mnt}/{hg.TAG_A}"
        r = podman(cdi_dir, "exec", name, "/bin/sh", "-c",
                   f"/probe open {mnt}.nodes/{hg.TAG_A}; ls {a} 2>&1 | tr '\\n' ' '; echo;"
                   f" /probe open {a}/data")
        # Node still there and still the device (ENXIO: reached device_dax);
        # the bound directory is empty and its data gone.
        assert lines_of(r) == ["ENXIO", "", "ENOENT"]
    finally:
        podman(cdi_dir, "rm", "-f", "-t", "0", name)
        holder.wait(60)
