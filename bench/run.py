#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The tagmem benchmarks (issue 6): tagmemfs against a tmpfs twin.

    sudo bench/run.sh                      # N = 1000, 10000, 100000, + QEMU data path
    sudo bench/run.sh --smoke              # seconds: tiny N, few repetitions (CTest bench_smoke)

For each N a synthetic host with N tagged DCD devices (tests/synthetic/hostgen.py) is
mounted over /sys and /dev in a private mount and network namespace (the script re-executes
itself under `unshare --mount --net`), tagmemfs is mounted on /run/tagmem, and a tmpfs
on /run/twinfs receives exactly the same layout (`tagmem-bench mirror`). Every figure is
measured on both in the same run and reported as the ratio tagmemfs / tmpfs. Results:
docs/benchmarks.md and docs/benchmarks.json (--out-dir changes where).

Microsecond loops run in C++ (bench/tagmem_bench.cpp); this script only orchestrates,
times the slow figures (startup, change propagation) and writes the tables.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import multiprocessing as mp
import os
import platform
import random
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests" / "synthetic"))
sys.path.insert(0, str(REPO / "tests" / "integration"))
import hostgen as hg  # noqa: E402
from namespace import enter_private_namespace  # noqa: E402

INNER_ENV = "TAGMEM_BENCH_IN_NAMESPACE"
FUSE, TWIN = "tagmem", "twinfs"  # /run/tagmem and /run/twinfs: same length and depth
DCD_DAX_DIR = "devices/platform/ACPI0017:00/root0/decoder0.0/region{r}/dax_region{r}"

# Targets of issue 6 (ratios are tagmemfs / tmpfs).
TARGETS = {
    "warm_stat": 1.10,
    "warm_open_read": 1.5,
    "cold_requests_per_component": 1.0,
    "lsl_warm": 2.0,
    "startup_10000_s": 1.0,
    "rss_per_tag_kib": 1.0,
    "propagation_p99_ms": 10.0,
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], check=True, **kw)


def median(xs):
    return statistics.median(xs) if xs else None


def pct(xs, p):
    """The p-th percentile (nearest rank)."""
    if not xs:
        return None
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


# -- settings ---------------------------------------------------------------

def settings(args) -> dict:
    if args.smoke:
        return dict(sizes=[40], startup_reps=2, startup_reps_big=1, cold_k=10, stat_rounds=3, stat_ops=2000,
                    open_rounds=3, open_ops=300, lsl_rounds=3, prop_reps=3, idle_s=0.5,
                    qemu=False)
    # Warm figures: many short rounds, each on both trees in turn (the order
    # alternating), so that the load of a shared machine falls on both sides
    # alike; the ratio is the median of the per-round ratios.
    return dict(sizes=[int(s) for s in args.sizes.split(",")], startup_reps=5,
                startup_reps_big=3, cold_k=200,
                stat_rounds=101, stat_ops=20_000, open_rounds=51, open_ops=2_000,
                lsl_rounds=21, prop_reps=50, idle_s=5.0, qemu=not args.skip_qemu)


# -- binaries ---------------------------------------------------------------

def bench_binary(build: Path) -> Path:
    """tagmem-bench from the CMake build, else compiled here with the project's flags."""
    built = build / "bench" / "tagmem-bench"
    src = HERE / "tagmem_bench.cpp"
    if built.is_file() and built.stat().st_mtime >= src.stat().st_mtime:
        return built
    out = build / "bench-standalone" / "tagmem-bench"
    if not out.is_file() or out.stat().st_mtime < src.stat().st_mtime:
        out.parent.mkdir(parents=True, exist_ok=True)
        log(f"compiling {out}")
        run(["g++", "-std=c++20", "-O2", "-g", "-DNDEBUG", "-Wall", "-Wextra", "-o", out, src])
    return out


class Tools:
    def __init__(self, build: Path):
        self.build = build
        self.tagmemfs = build / "fs" / "tagmemfs"
        self.tagmem = build / "cli" / "tagmem"
        for b in (self.tagmemfs, self.tagmem):
            if not b.is_file():
                sys.exit(f"{b} is missing: cmake --build {build}")
        self.bench = bench_binary(build)

    def bench_json(self, *args) -> dict:
        r = subprocess.run([str(self.bench), *map(str, args)], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"tagmem-bench {args[0]} failed: {r.stderr.strip()}")
        return json.loads(r.stdout)


class HostMount:
    """A synthetic host mounted over /sys and /dev of this namespace."""

    def __init__(self, root: Path):
        self.root = root

    def __enter__(self):
        run(["sh", "-c", hg._ENTER_SCRIPT, "enter", self.root, sys.executable, hg.__file__,
             "true"])
        return self

    def __exit__(self, *exc):
        subprocess.run(["umount", "-R", "-l", "/dev"], check=False)
        subprocess.run(["umount", "-l", "/sys"], check=False)


# -- the daemon -------------------------------------------------------------

class Daemon:
    def __init__(self, tools: Tools, mnt: Path, log_path: Path, extra=()):
        self.mnt = mnt
        self.socket = Path(str(mnt) + ".sock")
        self.log_path = log_path
        self.tools = tools
        parent_dev = os.stat(mnt).st_dev
        self.log = open(log_path, "a")
        t0 = time.perf_counter()
        # TAGMEM_BENCH_WRAP="perf record -g -o /tmp/x.data --" profiles the daemons
        # (their RSS is then the wrapper's: for profiling runs only).
        wrap = os.environ.get("TAGMEM_BENCH_WRAP", "").split()
        self.proc = subprocess.Popen([*wrap, str(tools.tagmemfs), "-f", "--uevents", "udev",
                                      *extra, str(mnt)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        # Mounted = the mount point's root is another filesystem. The daemon scans
        # before it mounts, so a mounted namespace is complete.
        while True:
            try:
                if os.stat(mnt).st_dev != parent_dev:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"tagmemfs exited {self.proc.returncode}: "
                                   f"{log_path.read_text()[-2000:]}")
            time.sleep(0.0005)
        self.startup_s = time.perf_counter() - t0
        deadline = time.monotonic() + 30
        while not self.socket.exists():  # the socket comes right after the mount
            if time.monotonic() > deadline:
                raise RuntimeError("no watch socket")
            time.sleep(0.001)

    def stats(self) -> dict:
        return self.tools.bench_json("stats", "--socket", self.socket)

    def status(self) -> dict[str, int]:
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])
        return out

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True)
        self.log.close()


# -- figures ----------------------------------------------------------------

def request_delta(before: dict, after: dict) -> dict:
    b, a = before["requests"], after["requests"]
    return {k: a[k] - b.get(k, 0) for k in a if a[k] - b.get(k, 0)}


def startup_and_cold(tools, cfg, n, work, names_file) -> dict:
    """Figures 3, 4 (cold) and 5: fresh daemons, each measured from launch."""
    fuse = work / FUSE
    out = {"startup_s": [], "cold_stat": [], "cold_metadata": [], "lsl_cold_s": [],
           "lsl_cold_requests": [], "tags_seen": []}
    reps = cfg["startup_reps"] if n <= 10000 else cfg["startup_reps_big"]
    for rep in range(reps):
        d = Daemon(tools, fuse, work / f"tagmemfs-{n}.log")
        try:
            out["startup_s"].append(d.startup_s)
            out["tags_seen"].append(d.stats()["tags"])
            if out["tags_seen"][-1] != n:
                raise RuntimeError(f"mounted with {out['tags_seen'][-1]} tags, not {n}")
            k = min(cfg["cold_k"], max(1, n // 10))
            # Figure 3: first access of never-touched tags: stat(<tag>/data), then
            # open+read of <tag>/metadata on other tags.
            out["cold_stat"].append(tools.bench_json(
                "cold", "--names", names_file, "--root", fuse, "--socket", d.socket, "--k", k,
                "--seed", 100 + rep, "--what", "data"))
            out["cold_metadata"].append(tools.bench_json(
                "cold", "--names", names_file, "--root", fuse, "--socket", d.socket, "--k", k,
                "--seed", 200 + rep, "--what", "metadata"))
            # Figure 4 cold: the first `ls -l` of the root after the mount.
            before = d.stats()
            r = tools.bench_json("lsl", "--root", fuse, "--rounds", 1)
            out["lsl_cold_requests"].append(request_delta(before, d.stats()))
            out["lsl_cold_s"].append(r["seconds"][str(fuse)][0])
        finally:
            d.stop()
    return out


def warm_figures(tools, cfg, work, names_file) -> dict:
    fuse, tmpf = work / FUSE, work / TWIN
    res = {}
    res["stat"] = tools.bench_json("warm-stat", "--names", names_file, "--root", fuse,
                                   "--root", tmpf, "--rounds", cfg["stat_rounds"],
                                   "--ops", cfg["stat_ops"])
    res["open_read"] = tools.bench_json("warm-open", "--names", names_file, "--root", fuse,
                                        "--root", tmpf, "--rounds", cfg["open_rounds"],
                                        "--ops", cfg["open_ops"])
    tools.bench_json("lsl", "--root", fuse, "--root", tmpf, "--rounds", 1)  # warm up
    res["lsl"] = tools.bench_json("lsl", "--root", fuse, "--root", tmpf,
                                  "--rounds", cfg["lsl_rounds"])
    return res


class Stash:
    """Takes one device of a written many() host out of sysfs and /dev, and puts it
    back, as a DCD release and a new allocation would: the device directory, its
    extent, its links and its node, each change a rename or a single call."""

    def __init__(self, root: Path, major: int):
        self.sys = root / "sys"
        self.stash = root / "stash"
        self.stash.mkdir(exist_ok=True)
        self.major = major
        self.saved: dict[str, dict] = {}

    def _paths(self, region: int, dev_id: int) -> dict:
        dax_dir = DCD_DAX_DIR.format(r=region)
        name = f"dax{region}.{dev_id}"
        minor = int((self.sys / dax_dir / name / "dev").read_text().split(":")[1]) \
            if (self.sys / dax_dir / name).exists() else self.saved[name]["minor"]
        return {
            "name": name, "minor": minor, "devpath": f"/{dax_dir}/{name}",
            "dirs": [f"{dax_dir}/{name}", f"{dax_dir}/extent{region}.{dev_id}"],
            "links": [f"bus/dax/devices/{name}", f"dev/char/{self.major}:{minor}",
                      f"bus/dax/drivers/device_dax/{name}"],
        }

    def remove(self, region: int, dev_id: int) -> dict:
        p = self._paths(region, dev_id)
        p["targets"] = {ln: os.readlink(self.sys / ln) for ln in p["links"]}
        for ln in p["links"]:
            os.unlink(self.sys / ln)
        for d in p["dirs"]:
            os.rename(self.sys / d, self.stash / Path(d).name)
        os.unlink(f"/dev/{p['name']}")
        self.saved[p["name"]] = p
        return p

    def add(self, region: int, dev_id: int) -> dict:
        p = self.saved.pop(f"dax{region}.{dev_id}")
        os.mknod(f"/dev/{p['name']}", 0o600 | 0o020000, os.makedev(self.major, p["minor"]))
        for d in p["dirs"]:
            os.rename(self.stash / Path(d).name, self.sys / d)
        for ln, target in p["targets"].items():
            os.symlink(target, self.sys / ln)
        return p


def wait_until(check, timeout=10.0, pause=0.00005) -> float:
    """Seconds until check() is true, polled with tiny sleeps."""
    t0 = time.perf_counter()
    while not check():
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError("timed out")
        time.sleep(pause)
    return time.perf_counter() - t0


def propagation(tools, cfg, n, host_root, work, sender) -> dict:
    """Figure 7: a tag removed from / added to the host, seen under the mount."""
    fuse = work / FUSE
    stash = Stash(host_root, hg.dax_major())
    rng = random.Random(7)
    picks = rng.sample(range(min(n, hg.SCALE_DEVICES_PER_REGION)),
                       min(cfg["prop_reps"], n))
    out = {"remove_ms": [], "add_ms": [], "remove_requests": [], "add_requests": []}
    d = Daemon(tools, fuse, work / f"tagmemfs-prop-{n}.log")
    abusers = []
    try:
        if cfg.get("abuse"):
            # Issue 9: what a hostile local user costs everyone else. As
            # nobody: idle connection floods and malformed, oversized and
            # half-written requests, for as long as the changes are timed.
            from abuse import abuser
            ctx = mp.get_context("fork")
            counts = ctx.Queue()
            stop_at = time.time() + 3600
            abusers = [ctx.Process(target=abuser, args=(d.socket, stop_at, 300, 100 + k, counts))
                       for k in range(2)]
            for a in abusers:
                a.start()
            time.sleep(2)  # the flood is on before the first change
        for dev_id in picks:
            tag = hg.scale_tag(dev_id)
            tag_dir, data = fuse / tag, fuse / tag / "data"
            os.stat(data)  # a warm, positive entry: what a running program holds
            p = stash.remove(0, dev_id)
            before = d.stats()
            t0 = time.perf_counter()
            # As the kernel does: the driver lets go, then the device goes.
            sender.send("unbind", p["devpath"], "dax")
            sender.send("remove", p["devpath"], "dax")
            wait_until(lambda: not os.path.lexists(tag_dir))
            out["remove_ms"].append((time.perf_counter() - t0) * 1e3)
            out["remove_requests"].append(request_delta(before, d.stats()))
            time.sleep(0.01)
            p = stash.add(0, dev_id)
            before = d.stats()
            t0 = time.perf_counter()
            # As the kernel does: the device is added, then device_dax binds it
            # (tagmemfs publishes a new device at its bind).
            sender.send("add", p["devpath"], "dax", MAJOR=str(stash.major), MINOR=str(p["minor"]),
                        DEVNAME=p["name"])
            sender.send("bind", p["devpath"], "dax", MAJOR=str(stash.major),
                        MINOR=str(p["minor"]), DEVNAME=p["name"], DRIVER="device_dax")
            wait_until(lambda: os.path.exists(data))
            out["add_ms"].append((time.perf_counter() - t0) * 1e3)
            out["add_requests"].append(request_delta(before, d.stats()))
            time.sleep(0.01)
        # Idle cost: CPU the daemon uses when nothing happens (extent polling).
        c0, t0 = d.cpu_s(), time.perf_counter()
        time.sleep(cfg["idle_s"])
        out["idle_cpu_pct"] = 100 * (d.cpu_s() - c0) / (time.perf_counter() - t0)
    finally:
        for a in abusers:
            a.terminate()
            a.join()
        d.stop()
    return out


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def measure_size(tools, cfg, n, work, scratch, sender, rss_empty_kib) -> dict:
    fuse, tmpf = work / FUSE, work / TWIN
    only = cfg["only"]
    res = {"n": n, "loadavg": [loadavg()]}
    host_root = scratch / f"host-{n}"
    t0 = time.perf_counter()
    hg.many(n).write(host_root)
    res["host_write_s"] = time.perf_counter() - t0
    names_file = work / f"names-{n}.txt"
    names_file.write_text("".join(hg.scale_tag(i) + "\n" for i in range(n)))
    log(f"N={n}: host written in {res['host_write_s']:.1f}s")
    with HostMount(host_root):
        if "cold" in only:
            res["cold"] = startup_and_cold(tools, cfg, n, work, names_file)
            log(f"N={n}: startup {median(res['cold']['startup_s']):.3f}s (median)")
        if only & {"warm", "memory"}:
            # One daemon for the warm figures and the memory figure.
            d = Daemon(tools, fuse, work / f"tagmemfs-{n}.log")
            try:
                run(["mount", "-t", "tmpfs", "-o", "mode=0755", "bench-tmpf", tmpf])
                try:
                    os.chmod(tmpf, 0o555)
                    mirror = tools.bench_json("mirror", "--from", fuse, "--to", tmpf)
                    res["mirror_s"] = mirror["seconds"]
                    if mirror["tags"] != n:
                        raise RuntimeError(f"the mount shows {mirror['tags']} tags, not {n}")
                    # Figure 6: after the full traversal the mirror made.
                    st = d.status()
                    res["rss_kib"], res["hwm_kib"] = st["VmRSS"], st["VmHWM"]
                    res["rss_per_tag_kib"] = (st["VmRSS"] - rss_empty_kib) / n
                    log(f"N={n}: RSS {st['VmRSS']} KiB, {res['rss_per_tag_kib']:.2f} KiB/tag")
                    if "warm" in only:
                        before = d.stats()
                        res["warm"] = warm_figures(tools, cfg, work, names_file)
                        res["warm_requests"] = request_delta(before, d.stats())
                        log(f"N={n}: warm figures done")
                finally:
                    subprocess.run(["umount", "-l", str(tmpf)], check=False)
            finally:
                d.stop()
        if "propagation" in only:
            res["propagation"] = propagation(tools, cfg, n, host_root, work, sender)
            log(f"N={n}: propagation p99 add {pct(res['propagation']['add_ms'], 99):.2f} ms, "
                f"remove {pct(res['propagation']['remove_ms'], 99):.2f} ms")
    res["loadavg"].append(loadavg())
    return res


def empty_host_rss(tools, work, scratch) -> int:
    root = scratch / "host-empty"
    hg.empty().write(root)
    with HostMount(root):
        d = Daemon(tools, work / FUSE, work / "tagmemfs-empty.log")
        try:
            tools.bench_json("lsl", "--root", work / FUSE, "--rounds", 1)
            return d.status()["VmRSS"]
        finally:
            d.stop()


# -- figure 8: the data path in QEMU -----------------------------------------

DATA_TAG = "da7a0000-0008-4000-8000-000000000008"
FILL = "256M"


def qemu_data_path(tools, reps: int, log_dir: Path) -> dict:
    sys.path.insert(0, str(REPO / "tests" / "qemu"))
    import tagmemvm
    import vmkit
    cache = None
    if not os.environ.get("TAGMEM_QEMU_CACHE") and (REPO / "build" / "qemu-cache").is_dir():
        cache = REPO / "build" / "qemu-cache"  # the tests' cache: no second download
    assets = vmkit.ensure_assets(cache)
    cache = assets.cache_dir
    nv = vmkit.NvdimmSpec(cache / "images" / "bench-datapath.img", "1G")
    vmkit.prepare_nvdimm(nv, [DATA_TAG], "512M", assets=assets)
    product = tagmemvm.product_binaries(tools.build, cache)
    gtools = tagmemvm.guest_tools(tools.build, cache)
    lines = [f"TAG={DATA_TAG}", "DAX=$(vmkit_dax_for_tag $TAG)", "tm_start",
             "grep -H . /sys/bus/dax/devices/${DAX##*/}/align || true",
             # Not counted: the first touch of the backing file costs the host.
             f"daxmap write $DAX 0x777 {FILL} >/dev/null"]
    for i in range(reps):
        # Alternate the order so that warm-up effects fall on both sides.
        pair = ["$TM_MNT/$TAG/data", "$DAX"]
        for path in (pair if i % 2 == 0 else pair[::-1]):
            lines.append(f"daxmap write {path} {0x1000 + i:#x} {FILL}")
    lines.append("tm_stop")
    with tempfile.TemporaryDirectory() as tmp:
        initrd = tagmemvm.build_initrd(Path(tmp) / "bench.cpio", "\n".join(lines) + "\n",
                                       assets=assets, product=product, tools=gtools)
        res = vmkit.boot(initrd, [nv], timeout_s=900, name="bench-datapath", assets=assets,
                         log_path=log_dir / "bench-datapath-console.log")
    rows = re.findall(r"daxmap write: path=(\S+) .*?minflt=(\d+) majflt=(\d+) seconds=(\S+) "
                      r"MBps=(\S+) OK", res.console)
    out = {"tagmemfs": [], "devdax": [], "console_tail": res.tail(15),
           "guest_kernel": assets.kver}
    for path, minflt, majflt, secs, mbps in rows:
        side = "tagmemfs" if "/data" in path else "devdax"
        out[side].append({"path": path, "minflt": int(minflt), "majflt": int(majflt),
                          "seconds": float(secs), "MBps": float(mbps)})
    m = re.search(r"/align:(\d+)", res.console)
    out["align"] = int(m.group(1)) if m else None
    # The figures stand even if the guest failed afterwards, but the failure is
    # reported with them (e.g. a kernel oops when tagmemfs unmounts).
    if res.oops or not res.passed:
        out["guest_failure"] = res.oops_summary or res.summary()
        out["console_log"] = str(log_dir / "bench-datapath-console.log")
    if not out["tagmemfs"] or not out["devdax"]:
        raise RuntimeError(f"no daxmap figures: {res.summary()}")
    return out


# -- report -----------------------------------------------------------------

def machine_info(tools: Tools, label: str) -> dict:
    def cmd(*argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""
    cpu = next((ln.split(":", 1)[1].strip() for ln in
                Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")),
               platform.machine())
    mem = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
               if ln.startswith("MemTotal"))
    # The source the binaries were built from (the build dir may belong to another tree).
    source = REPO
    with contextlib.suppress(OSError):
        for ln in (tools.build / "CMakeCache.txt").read_text().splitlines():
            if ln.startswith("CMAKE_HOME_DIRECTORY:"):
                source = Path(ln.split("=", 1)[1])
    commit = cmd("git", "-C", str(source), "rev-parse", "--short", "HEAD")
    dirty = cmd("git", "-C", str(source), "status", "--porcelain", "--untracked-files=no",
                "core", "fs", "cli") if commit else ""
    if not commit and (source / "SOURCE_COMMIT").is_file():
        commit = (source / "SOURCE_COMMIT").read_text().strip()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "kernel": platform.release(), "cpu": cpu, "cpus": os.cpu_count(),
        "memory_gib": round(mem / 2**20, 1),
        "tagmem": cmd(str(tools.tagmemfs), "--version"),
        "commit": (commit or f"unknown (source {source})")
        + (" (+ uncommitted changes in core/fs/cli)" if dirty else ""),
        "label": label,
        "libfuse": cmd("pkg-config", "--modversion", "fuse3"),
        "libdaxctl": cmd("pkg-config", "--modversion", "libdaxctl"),
        "compiler": cmd("c++", "--version").splitlines()[0] if cmd("c++", "--version") else "",
        "python": platform.python_version(),
    }


def summarize(results: dict) -> dict:
    """The figures, per N, as numbers (medians), ratios and verdicts; a figure group
    left out (--only) is simply absent."""
    rows = {}
    for r in results["sizes"]:
        s = {"loadavg": r.get("loadavg")}
        w = r.get("warm")
        lt = None
        if w:
            fuse_key, tmpf_key = list(w["stat"]["ns_per_op"])
            def paired(fs, ts):
                return median([f / t for f, t in zip(fs, ts)])
            for fig, key in (("stat", "warm_stat"), ("open_read", "warm_open_read")):
                fs, ts = w[fig]["ns_per_op"][fuse_key], w[fig]["ns_per_op"][tmpf_key]
                f, t = median(fs), median(ts)
                s[key] = {"fuse_ns": f, "tmpfs_ns": t, "ratio": paired(fs, ts),
                          "ratio_of_medians": f / t, "rounds": len(fs)}
            fs, ts = w["lsl"]["seconds"][fuse_key], w["lsl"]["seconds"][tmpf_key]
            lf, lt = median(fs), median(ts)
            s["lsl_warm"] = {"fuse_ms": lf * 1e3, "tmpfs_ms": lt * 1e3, "ratio": paired(fs, ts),
                             "ratio_of_medians": lf / lt, "rounds": len(fs)}
        c = r.get("cold")
        if c:
            lc = median(c["lsl_cold_s"])
            s["lsl_cold"] = {"fuse_ms": lc * 1e3, "requests": c["lsl_cold_requests"][0]}
            if lt:
                s["lsl_cold"].update(tmpfs_ms=lt * 1e3, ratio=lc / lt)
            for what in ("cold_stat", "cold_metadata"):
                us = [x for run in c[what] for x in run["us"]]
                reqs = [x for run in c[what] for x in run["requests"]]
                kinds: dict[str, int] = {}
                for run in c[what]:
                    for k, v in run["requests_by_kind"].items():
                        kinds[k] = kinds.get(k, 0) + v
                s[what] = {"p50_us": median(us), "p99_us": pct(us, 99),
                           "max_requests": max(reqs), "mean_requests": sum(reqs) / len(reqs),
                           "requests_per_access_by_kind": {k: v / len(reqs)
                                                           for k, v in kinds.items()},
                           "samples": len(us)}
            s["startup_s"] = {"median": median(c["startup_s"]), "max": max(c["startup_s"]),
                              "reps": len(c["startup_s"])}
        if "rss_kib" in r:
            s["rss"] = {"rss_kib": r["rss_kib"], "per_tag_kib": r["rss_per_tag_kib"],
                        "hwm_kib": r["hwm_kib"]}
        p = r.get("propagation")
        if p:
            s["propagation"] = {"add_p50_ms": median(p["add_ms"]),
                                "add_p99_ms": pct(p["add_ms"], 99),
                                "remove_p50_ms": median(p["remove_ms"]),
                                "remove_p99_ms": pct(p["remove_ms"], 99),
                                "reps": len(p["add_ms"]), "idle_cpu_pct": p["idle_cpu_pct"]}
        rows[r["n"]] = s
    return rows


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("pass" if ok else "**FAIL**")


def render_markdown(results: dict, summary: dict, command: str) -> str:
    m = results["machine"]
    ns = sorted(summary)
    head = "| figure | target | " + " | ".join(f"N = {n:,}" for n in ns) + " |"
    sep = "|---|---|" + "---|" * len(ns)
    out = [
        "<!-- SPDX-License-Identifier: Apache-2.0 -->",
        "# Benchmarks: tagmemfs against a tmpfs twin",
        "",
        "Generated by `bench/run.py`; do not edit by hand. Reproduce with",
        "",
        f"```sh\n{command}\n```",
        "",
        "Each N is a synthetic host (`hostgen.many(N)`: N tagged CXL DCD devices) mounted "
        "over `/sys` and `/dev` in a private mount and network namespace. tagmemfs is mounted "
        "next to a tmpfs holding exactly the same layout (`<uuid>/dev` symlink, `size`, "
        "`shareable`, `metadata` files, `data` a character node with the same rdev, owner and "
        "mode), copied from the mount itself. Every figure is measured on both in the same run; "
        "ratios are tagmemfs / tmpfs: for the warm figures the median of the per-round "
        "ratios (each round runs on both trees back to back), elsewhere of the medians "
        "(all numbers in "
        "[benchmarks.json](benchmarks.json)). How each figure is taken: see the end.",
        "",
        "## Machine",
        "",
        "| | |", "|---|---|",
    ]
    for k in ("label", "date", "kernel", "cpu", "cpus", "memory_gib", "tagmem", "commit", "libfuse",
              "libdaxctl", "compiler", "python"):
        out.append(f"| {k} | {m.get(k, '')} |")
    out += ["", "## Results", ""]
    if results.get("settings", {}).get("sizes") == [40]:
        out += ["**Smoke run** (`--smoke`): tiny N and a few repetitions, to keep the harness "
                "working; its verdicts mean nothing.", ""]
    out += [head, sep]

    def row(name, target, cells):
        out.append(f"| {name} | {target} | " + " | ".join(cells) + " |")

    def cell(n, fn):
        try:
            return fn(summary[n])
        except (KeyError, TypeError, ZeroDivisionError):
            return "—"

    r = lambda x: f"{x:.2f}"  # noqa: E731
    row("1. warm `stat()` of `<tag>/data`, random tags: ns (fuse / tmpfs)", "",
        [cell(n, lambda s: f"{s['warm_stat']['fuse_ns']:.0f} / {s['warm_stat']['tmpfs_ns']:.0f}")
         for n in ns])
    row("&nbsp;&nbsp;ratio", f"≤ {TARGETS['warm_stat']:.2f}",
        [cell(n, lambda s: f"{r(s['warm_stat']['ratio'])} "
              f"{verdict(s['warm_stat']['ratio'] <= TARGETS['warm_stat'])}") for n in ns])
    row("2. warm `open`+`read`+`close` of `<tag>/metadata`: µs (fuse / tmpfs)", "",
        [cell(n, lambda s: f"{s['warm_open_read']['fuse_ns'] / 1e3:.2f} / "
              f"{s['warm_open_read']['tmpfs_ns'] / 1e3:.2f}") for n in ns])
    row("&nbsp;&nbsp;ratio", f"≤ {TARGETS['warm_open_read']:.1f}",
        [cell(n, lambda s: f"{r(s['warm_open_read']['ratio'])} "
              f"{verdict(s['warm_open_read']['ratio'] <= TARGETS['warm_open_read'])}")
         for n in ns])
    row("3. cold `stat(<tag>/data)` (2 components): p50 / p99 µs", "",
        [cell(n, lambda s: f"{s['cold_stat']['p50_us']:.0f} / {s['cold_stat']['p99_us']:.0f}")
         for n in ns])
    row("&nbsp;&nbsp;FUSE requests per access (max)", "≤ 2 (one per component)",
        [cell(n, lambda s: f"{s['cold_stat']['mean_requests']:.2f} "
              f"({s['cold_stat']['max_requests']}) {verdict(s['cold_stat']['max_requests'] <= 2)}")
         for n in ns])
    row("&nbsp;&nbsp;cold `open`+`read` of `<tag>/metadata`: p50 / p99 µs, requests", "",
        [cell(n, lambda s: f"{s['cold_metadata']['p50_us']:.0f} / "
              f"{s['cold_metadata']['p99_us']:.0f}, {s['cold_metadata']['mean_requests']:.1f}")
         for n in ns])
    row("4. `ls -l` of the root, warm: ms (fuse / tmpfs)", "",
        [cell(n, lambda s: f"{s['lsl_warm']['fuse_ms']:.2f} / {s['lsl_warm']['tmpfs_ms']:.2f}")
         for n in ns])
    row("&nbsp;&nbsp;warm ratio", f"≤ {TARGETS['lsl_warm']:.1f}",
        [cell(n, lambda s: f"{r(s['lsl_warm']['ratio'])} "
              f"{verdict(s['lsl_warm']['ratio'] <= TARGETS['lsl_warm'])}") for n in ns])
    row("&nbsp;&nbsp;cold (first after mount): ms, ratio to warm tmpfs", "",
        [cell(n, lambda s: f"{s['lsl_cold']['fuse_ms']:.1f}, {r(s['lsl_cold']['ratio'])}")
         for n in ns])
    row("&nbsp;&nbsp;cold: FUSE requests", "",
        [cell(n, lambda s: ", ".join(f"{k} {v}" for k, v in s['lsl_cold']['requests'].items()))
         for n in ns])
    row("5. startup, launch to mounted complete namespace: s (median, max)",
        f"≤ {TARGETS['startup_10000_s']:.0f} s at 10,000",
        [cell(n, lambda s: f"{s['startup_s']['median']:.3f}, {s['startup_s']['max']:.3f}"
              + (f" {verdict(s['startup_s']['median'] <= TARGETS['startup_10000_s'])}"
                 if n == 10000 else "")) for n in ns])
    row("6. daemon RSS after a full traversal: MiB", "",
        [cell(n, lambda s: f"{s['rss']['rss_kib'] / 1024:.1f}") for n in ns])
    row("&nbsp;&nbsp;(RSS − empty-host RSS) / N: KiB per tag",
        f"≤ {TARGETS['rss_per_tag_kib']:.0f} at 100,000",
        [cell(n, lambda s: f"{s['rss']['per_tag_kib']:.2f}"
              + (f" {verdict(s['rss']['per_tag_kib'] <= TARGETS['rss_per_tag_kib'])}"
                 if n == 100000 else "")) for n in ns])
    row("7. tag added → visible: p50 / p99 ms", f"p99 ≤ {TARGETS['propagation_p99_ms']:.0f} at 10,000",
        [cell(n, lambda s: f"{s['propagation']['add_p50_ms']:.2f} / "
              f"{s['propagation']['add_p99_ms']:.2f}"
              + (f" {verdict(s['propagation']['add_p99_ms'] <= TARGETS['propagation_p99_ms'])}"
                 if n == 10000 else "")) for n in ns])
    row("&nbsp;&nbsp;tag removed → gone: p50 / p99 ms",
        f"p99 ≤ {TARGETS['propagation_p99_ms']:.0f} at 10,000",
        [cell(n, lambda s: f"{s['propagation']['remove_p50_ms']:.2f} / "
              f"{s['propagation']['remove_p99_ms']:.2f}"
              + (f" {verdict(s['propagation']['remove_p99_ms'] <= TARGETS['propagation_p99_ms'])}"
                 if n == 10000 else "")) for n in ns])
    row("&nbsp;&nbsp;idle daemon CPU (extent polling): %", "",
        [cell(n, lambda s: f"{s['propagation']['idle_cpu_pct']:.2f}") for n in ns])

    row("load average (1/5/15 min) before / after this N", "",
        [cell(n, lambda s: " → ".join(s["loadavg"])) for n in ns])

    q = results.get("qemu")
    out += ["", "### 8. Data path (QEMU guest, emulated NVDIMM devdax)", ""]
    if not q:
        out.append("Not run (`--skip-qemu` or `--smoke`).")
    elif "error" in q:
        out.append(f"Not measured: {q['error']}")
    else:
        f_mb = median([x["MBps"] for x in q["tagmemfs"]])
        d_mb = median([x["MBps"] for x in q["devdax"]])
        f_flt = sorted({x["minflt"] for x in q["tagmemfs"]})
        d_flt = sorted({x["minflt"] for x in q["devdax"]})
        ratio = f_mb / d_mb
        out += [
            f"Fill of a {FILL} tag with `daxmap write` (MAP_SHARED, one 64-bit store per word), "
            f"{len(q['tagmemfs'])} runs each, alternating; device align "
            f"{q.get('align')} bytes; guest kernel {q.get('guest_kernel', '?')} under QEMU.", "",
            "| | through `/run/tagmem/<tag>/data` | through `/dev/daxX.Y` | ratio | target |",
            "|---|---|---|---|---|",
            f"| write bandwidth, MB/s (median) | {f_mb:.1f} | {d_mb:.1f} | {ratio:.3f} | "
            f"1.00 ± 0.05 {verdict(abs(ratio - 1) <= 0.05)} |",
            f"| page faults per fill (minflt) | {', '.join(map(str, f_flt))} | "
            f"{', '.join(map(str, d_flt))} | | equal {verdict(f_flt == d_flt)} |",
        ]
        if q.get("guest_failure"):
            out += ["", f"**The guest failed after the fills:** {q['guest_failure']}"]
    out += ["", "## How each figure is taken", "", HOW]
    return "\n".join(out) + "\n"


HOW = """\
- **Warm `stat()`** (`tagmem-bench warm-stat`): every `<tag>/data` path is stat'ed twice
  first; then each round draws a random sequence of tags and runs it on both trees back to
  back (order alternating), and the figure is nanoseconds per `stat()`; the ratio is the
  median of the per-round ratios, which keeps the load of a shared machine out of it. Paths
  have the same length and depth on both sides (`/run/tagmem/...`, `/run/twinfs/...`, in the namespace's own `/run`).
- **The twin**: `tagmem-bench mirror` copies the mount's layout onto a tmpfs: `dev` as the
  same symlink, `size`, `shareable`, `metadata` with the same content, owner and mode, and
  `data` as a character node with the same rdev, owner and mode, as issue 6 specifies. Where
  tagmemfs's `data` is itself a symlink to a node (on its own tmpfs, `<mount>.nodes`),
  `stat()` and `open()` follow it there; the twin's `data` is the node.
- **Warm `open`+`read`+`close`** (`warm-open`): the same for `<tag>/metadata`, read to EOF.
- **Cold lookup** (`cold`): right after a fresh mount, K never-touched random tags are
  accessed once each, timed one by one; the daemon's request counters (`{"op":"stats"}` on
  the watch socket) are read before and after each access. `<tag>/data` has two components
  below the mount, so the target is at most 2 requests (a `data` symlink costs a READLINK
  on top).
- **`ls -l`** (`lsl`): `opendir`/`readdir` of the root and `statx(AT_SYMLINK_NOFOLLOW)` of
  every entry, as `ls -l` does (without sorting and printing). Cold = the first one after a
  fresh mount (a few tags were looked up before it, by the cold-lookup figure). tmpfs has no
  cold state: its dentries never leave memory, so the cold ratio uses warm tmpfs.
- **Startup**: from `Popen(tagmemfs -f ...)` until the mount point's `st_dev` changes
  (tagmemfs scans before it mounts, so a mounted namespace is complete; the tag count is
  then checked with the stats request).
- **Memory**: VmRSS of the daemon after the tmpfs twin was copied from the mount (every
  entry looked up, every file read), minus VmRSS of a daemon on an empty host.
- **Change propagation**: on the same host with the daemon running (`--uevents udev`), one
  device leaves: its sysfs directory and extent are renamed away, its links and `/dev`
  node removed, then udev-format `unbind` and `remove` events are sent
  (tests/integration/uevent.py); the time is until `lstat(<mount>/<tag>)` fails. Then it
  comes back the same way with `add` and `bind` events, until `stat(<mount>/<tag>/data)`
  succeeds. Polled every ~50 µs.
- **Data path**: a QEMU guest (tests/qemu/vmkit.py) with an emulated NVDIMM holding a
  tagged devdax namespace; `daxmap write` fills the first 256 MiB through the tag's `data`
  and through `/dev/daxX.Y`, alternating, and reports MB/s and its minor faults.
"""


# -- main -------------------------------------------------------------------

def command_args(argv: list[str]) -> list[str]:
    """The arguments worth repeating: not where the results went."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--out-dir":
            skip = True
        elif not a.startswith("--out-dir="):
            out.append(a)
    return out


def render_only(json_path: Path, out_dir: Path | None) -> int:
    """Writes benchmarks.md again from a benchmarks.json (after a template change)."""
    results = json.loads(json_path.read_text())
    summary = {int(k): v for k, v in results["summary"].items()}
    out = (out_dir or json_path.parent) / "benchmarks.md"
    out.write_text(render_markdown(results, summary, results.get("command", "sudo bench/run.sh")))
    print(f"wrote {out}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000", help="tag counts (comma-separated)")
    ap.add_argument("--smoke", action="store_true", help="tiny N and few repetitions (CI)")
    ap.add_argument("--skip-qemu", action="store_true", help="leave out figure 8")
    ap.add_argument("--qemu-reps", type=int, default=15, help="fills per side in the guest")
    ap.add_argument("--build-dir", default=os.environ.get("TAGMEM_BUILD_DIR", REPO / "build"))
    ap.add_argument("--only", default="cold,warm,memory,propagation,qemu",
                    help="figure groups to run: cold (3, 4 cold, 5), warm (1, 2, 4), memory (6), "
                    "propagation (7), qemu (8)")
    ap.add_argument("--abuse", action="store_true",
                    help="time propagation while two clients as nobody flood the watch socket")
    ap.add_argument("--label", default="", help="a note for the table (e.g. 'before the fix')")
    ap.add_argument("--out-dir", help="where benchmarks.md/.json go (default docs/, "
                    "or <build>/bench-smoke with --smoke)")
    ap.add_argument("--render", metavar="JSON", help="only write benchmarks.md again from a "
                    "benchmarks.json")
    args = ap.parse_args()
    if args.render:
        return render_only(Path(args.render), Path(args.out_dir) if args.out_dir else None)
    enter_private_namespace(__file__, INNER_ENV)

    build = Path(args.build_dir).resolve()
    tools = Tools(build)
    cfg = settings(args)
    cfg["only"] = set(args.only.split(","))
    cfg["abuse"] = args.abuse
    if not cfg["qemu"]:
        cfg["only"].discard("qemu")
    out_dir = Path(args.out_dir) if args.out_dir else (
        build / "bench-smoke" if args.smoke else REPO / "docs")
    out_dir.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["sudo", "bench/run.sh", *command_args(sys.argv[1:])])

    # Our own /run (libudev listens to udev events only when /run/udev/control
    # exists) and a tmpfs for the mount points, so that nothing leaks out.
    run(["mount", "-t", "tmpfs", "-o", "mode=0755", "bench-run", "/run"])
    os.makedirs("/run/udev")
    Path("/run/udev/control").touch()
    from uevent import UdevSender
    sender = UdevSender()
    # The mount is where it is in production, /run/tagmem (so its data links
    # lead to /run/tagmem.nodes), and the twin's path is as long and as deep.
    work = Path("/run")
    for sub in (FUSE, TWIN):
        (work / sub).mkdir()

    results = {"machine": machine_info(tools, args.label), "command": command,
               "settings": {**cfg, "only": sorted(cfg["only"])}, "sizes": []}
    log(f"machine: {results['machine']}")

    def save():
        summary = summarize(results)
        results["summary"] = {str(k): v for k, v in summary.items()}
        (out_dir / "benchmarks.json").write_text(json.dumps(results, indent=1) + "\n")
        if summary or results.get("qemu"):
            (out_dir / "benchmarks.md").write_text(render_markdown(results, summary, command))

    try:
        if "qemu" in cfg["only"]:
            log("figure 8: QEMU data path")
            try:
                results["qemu"] = qemu_data_path(tools, args.qemu_reps, build)
            except Exception as e:  # reported, never fatal for the rest
                log(f"QEMU data path not measured: {e}")
                results["qemu"] = {"error": str(e).splitlines()[0][:300]}
        sizes = cfg["sizes"] if cfg["only"] - {"qemu"} else []
        if sizes:
            with hg.scratch_tmpfs() as scratch:
                rss_empty = empty_host_rss(tools, work, scratch)
            results["rss_empty_kib"] = rss_empty
            log(f"empty host: RSS {rss_empty} KiB")
        for n in sizes:
            # A tmpfs per host: unmounting frees it at once.
            with hg.scratch_tmpfs() as scratch:
                results["sizes"].append(measure_size(tools, cfg, n, work, scratch, sender,
                                                     rss_empty))
            save()
    finally:
        sender.close()
    save()
    print(f"wrote {out_dir / 'benchmarks.md'} and {out_dir / 'benchmarks.json'}")
    if args.smoke:
        print((out_dir / "benchmarks.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
