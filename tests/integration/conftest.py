# SPDX-License-Identifier: Apache-2.0
"""Fixtures for tests that run the real binaries on synthetic hosts.

The whole pytest process runs in a private mount namespace (CTest starts it
under `unshare --mount --propagation private`). Each test mounts its own
synthetic host over /sys and /dev there, so libdaxctl, tagmem and tagmemfs
read the fake tree exactly as they would read the kernel's, and nothing
leaks to the machine's real mounts.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest


def eventually(check, timeout=10.0, what="condition", pause=0.01, ignore=()):
    """Polls check() until it is true; fails after timeout seconds. Exceptions
    of the types in `ignore` count as "not yet" (a path that vanishes and
    comes back while a tag changes)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except ignore:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(pause)


HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tests" / "synthetic"))
import hostgen  # noqa: E402

BUILD = Path(os.environ.get("TAGMEM_BUILD_DIR", ROOT / "build")).resolve()
TAGMEM = BUILD / "cli" / "tagmem"
TAGMEMFS = BUILD / "fs" / "tagmemfs"


def _in_private_mount_namespace() -> bool:
    # unshare execs pytest in place, so the parent (ctest, a shell) is still
    # in the namespace we must not touch. (/proc/1 may be out of reach.)
    return os.stat("/proc/self/ns/mnt").st_ino != os.stat(f"/proc/{os.getppid()}/ns/mnt").st_ino


def pytest_configure(config):
    if os.geteuid() != 0:
        pytest.exit("SKIPPED LOUDLY: these tests need root (mount namespaces, FUSE, mknod)",
                    returncode=1)
    if not _in_private_mount_namespace():
        pytest.exit("refusing to mount synthetic hosts over the machine's /sys and /dev: run "
                    "under `unshare --mount --propagation private` (ctest does)", returncode=1)
    for binary in (TAGMEM, TAGMEMFS):
        if not binary.exists():
            pytest.exit(f"{binary} is missing: build first (TAGMEM_BUILD_DIR={BUILD})",
                        returncode=1)


class SyntheticHost:
    """A synthetic host mounted over /sys and /dev of this namespace."""

    def __init__(self, root: Path, host: hostgen.Host):
        self.root = root
        self.host = host

    @property
    def sys(self) -> Path:
        return self.root / "sys"

    def mount(self) -> None:
        # The same setup script hostgen's run_in_host uses, run in this
        # (already private) namespace instead of a new one.
        subprocess.run(["sh", "-c", hostgen._ENTER_SCRIPT, "enter", str(self.root),
                        sys.executable, hostgen.__file__, "true"], check=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-R", "-l", "/dev"], check=False)
        subprocess.run(["umount", "-l", "/sys"], check=False)

    def rewrite(self, host: hostgen.Host) -> None:
        """Replace the tree's content with another host's (for rescans and
        hotplug). Each top-level directory of /sys is swapped atomically
        (renameat2 RENAME_EXCHANGE), so a daemon reading meanwhile sees the
        old host or the new one, never a half-deleted tree."""
        new = self.root.parent / (self.root.name + ".next")
        if new.exists():
            shutil.rmtree(new)
        host.write(new)
        # Named first: a directory only the new host has is moved, not
        # exchanged, and must not then count as one it lacks.
        names = {child.name for child in (new / "sys").iterdir()}
        for name in names:
            child, target = new / "sys" / name, self.sys / name
            if target.exists() or target.is_symlink():
                _exchange(child, target)
            else:
                os.rename(child, target)
        for child in self.sys.iterdir():
            if child.name not in names:
                shutil.rmtree(child)
        os.replace(new / "dev.list", self.root / "dev.list")
        shutil.rmtree(new)
        # /dev: the nodes of the new host replace those of the old one.
        lines = (self.root / "dev.list").read_text().splitlines()
        for line in lines:
            path = Path("/dev") / line.split()[1]
            if path.exists() or path.is_symlink():
                path.unlink()
        hostgen.populate_dev(lines)
        self.host = host


_libc = ctypes.CDLL(None, use_errno=True)


def _exchange(a: Path, b: Path) -> None:
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    if _libc.renameat2(AT_FDCWD, bytes(a), AT_FDCWD, bytes(b), RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(a))


# Set by scripts/test-sanitizers.sh: the sanitizer runtimes of every tagmem
# and tagmemfs started here write their reports to files in this directory
# (log_path). A daemon's report would otherwise only reach its log, and its
# exit status is not what most tests check.
SANITIZER_LOG_DIR = os.environ.get("TAGMEM_SANITIZER_LOG_DIR")


@pytest.fixture(autouse=True)
def no_sanitizer_reports():
    """Fails the test during which a sanitizer report was written. Autouse
    fixtures are set up first and torn down last, so reports of daemons
    stopped at teardown are seen too."""
    if not SANITIZER_LOG_DIR:
        yield
        return
    log_dir = Path(SANITIZER_LOG_DIR)
    before = set(log_dir.iterdir())
    yield
    new = sorted(set(log_dir.iterdir()) - before)
    if new:
        reports = "\n".join(f"==== {p}\n{p.read_text(errors='replace')[:20000]}" for p in new)
        pytest.fail(f"{len(new)} sanitizer report(s):\n{reports}", pytrace=False)


@pytest.fixture
def make_host(tmp_path):
    """make_host(hostgen.Host or scenario name) -> SyntheticHost, mounted."""
    mounted: list[SyntheticHost] = []

    def make(spec) -> SyntheticHost:
        host = hostgen.scenario(spec) if isinstance(spec, str) else spec
        root = tmp_path / f"host{len(mounted)}"
        host.write(root)
        h = SyntheticHost(root, host)
        if mounted:
            mounted[-1].unmount()
        h.mount()
        mounted.append(h)
        return h

    yield make
    for h in reversed(mounted):
        h.unmount()


def run_tagmem(*args, config: Path | None = None, check_json=False, **kw):
    argv = [str(TAGMEM)]
    if config is not None:
        argv += ["--config", str(config)]
    argv += [str(a) for a in args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)
    if check_json:
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)
    return r


def list_json(config: Path | None = None) -> dict:
    return run_tagmem("list", "--json", config=config, check_json=True)


def preload_env(shim: Path) -> dict:
    """The environment that preloads the shim. Under ASan (the sanitizer pass of
    scripts/test.sh) the shim comes before the ASan runtime in the library list,
    which ASan refuses by default; it is a plain interposer, so that check alone
    is turned off, for this process only."""
    env = {**os.environ, "LD_PRELOAD": str(shim)}
    if "ASAN_OPTIONS" in env:
        env["ASAN_OPTIONS"] += ":verify_asan_link_order=0"
    return env


def write_config(tmp_path: Path, text: str, name="tagmem.conf") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def mount_options(mount_point: Path) -> tuple[str, set[str], set[str]] | None:
    """(fstype, mount options, super options) of the top mount at the path."""
    found = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, post = line.split(" - ")
        fields = pre.split()
        if fields[4] == str(mount_point):
            fstype, _source, sup = post.split()[:3]
            found = (fstype, set(fields[5].split(",")), set(sup.split(",")))
    return found


class Daemon:
    """A tagmemfs process serving a mount point."""

    def __init__(self, mount_point: Path, args: list[str], log_path: Path):
        self.mount_point = mount_point
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([str(TAGMEMFS), "-f", "-l", "debug", *args,
                                      str(mount_point)], stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def wait_mounted(self, timeout=30.0) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while time.monotonic() < deadline:
            # A stale mount of a killed daemon shows in mountinfo too: wait
            # for this daemon to say it mounted.
            mi = mount_options(self.mount_point)
            if mi and mi[0] == "fuse.tagmem" and " mounted " in self.text():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"tagmemfs exited {self.proc.returncode}:\n{self.text()}")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        raise AssertionError(f"tagmemfs did not mount within {timeout}s:\n{self.text()}")

    def text(self) -> str:
        return self.log_path.read_text()

    def rescan(self, expect_in_log: str | None = None, timeout=30.0) -> None:
        """SIGHUP, then wait for the rescan to be logged as finished."""
        before = self.text().count("rescan (SIGHUP)")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.text().count("rescan (SIGHUP)") > before:
                return
            time.sleep(0.02)
        raise AssertionError(f"no rescan logged after SIGHUP:\n{self.text()}")

    def stop(self, sig=signal.SIGTERM, timeout=30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"tagmemfs ignored {sig!r}:\n{self.text()}")
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def tagmemfs(tmp_path):
    """tagmemfs(*args, mount_point=None, cdi=False) -> Daemon, mounted; stopped at
    teardown. Without --cdi-dir or cdi=True it writes no CDI spec."""
    daemons: list[Daemon] = []

    # Mount points other users can reach (pytest's tmp_path is root-only), so
    # that an EACCES in a test is the data node's mode and not the path's.
    public = Path(tempfile.mkdtemp(prefix="tagmem-it-", dir="/tmp"))
    public.chmod(0o755)

    def start(*args, mount_point: Path | None = None, wait=True, cdi=False) -> Daemon:
        mp = mount_point or (public / f"mnt{len(daemons)}")
        args = [str(a) for a in args]
        # No CDI spec in the machine's real /var/run/cdi (a shared tmpfs, not
        # a mount of this namespace) unless a test asks for one.
        if not cdi and not any(a.startswith("--cdi-dir") or a == "--no-cdi" for a in args):
            args.insert(0, "--no-cdi")
        d = Daemon(mp, args, tmp_path / f"tagmemfs{len(daemons)}.log")
        daemons.append(d)
        if wait:
            d.wait_mounted()
        return d

    yield start
    for d in daemons:
        d.stop()
        subprocess.run(["umount", "-l", str(d.mount_point)], capture_output=True)
    shutil.rmtree(public, ignore_errors=True)


def run_as(uid: int, gid: int, code: str) -> subprocess.CompletedProcess:
    """Run Python code as another user (no supplementary groups)."""
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                           sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def udev():
    """Sends udev-format device events (see uevent.py).

    libudev only listens to udevd's multicast group when udevd seems to run
    (/run/udev/control exists), so this namespace gets a /run of its own
    that says so.
    """
    from uevent import UdevSender
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "fake-run", "/run"], check=True)
    os.makedirs("/run/udev")
    Path("/run/udev/control").touch()
    s = UdevSender()
    yield s
    s.close()
    subprocess.run(["umount", "-l", "/run"], check=False)
