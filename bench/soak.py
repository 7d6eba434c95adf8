#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Soak test of tagmemfs (issue 9): hours of tag churn under load, not in CI.

    sudo bench/soak.sh                          # 3600 s at 10,000 tags
    sudo bench/soak.sh --duration 120           # a short validation run

A synthetic host with N tagged DCD devices (tests/synthetic/hostgen.py many())
is mounted over /sys and /dev in a private mount and network namespace, as in
bench/run.py, and tagmemfs serves it on /run/tagmem with udev events. Then, for
--duration seconds, all at once:

- churn: devices leave and come back (sysfs directory, extent, links and /dev
  node renamed away and back, with udev-format unbind/remove and add/bind
  events), keeping about --absent of them away at any moment;
- readers (--readers processes): stat of random tags, read and check of their
  `metadata`, readlink of `dev`, stat of `data`; every failure is logged with
  its time and later checked against the churn's timeline: it is explained only
  if it is ENOENT/ESTALE and the tag was away, or changed within --grace seconds;
- watchers: `tagmem watch --json` as root, counting events;
- abusers, as nobody: a flood of idle connections to the watch socket (held,
  and replaced in batches), malformed and oversized requests, `stats` (root
  only), half-written lines;
- sampling every --sample-every seconds: VmRSS, open fds, threads and CPU time
  (utime+stime) of the daemon.

Writes <out-dir>/soak.csv (the samples) and <out-dir>/soak.md (a summary);
exits 1 if a reader saw an unexplained error, a watcher died, or the daemon
died or did not stop cleanly.
"""
from __future__ import annotations

import argparse
import datetime
import errno
import json
import multiprocessing as mp
import os
import platform
import queue
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests" / "synthetic"))
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(HERE))
import hostgen as hg  # noqa: E402
from namespace import enter_private_namespace  # noqa: E402
from abuse import abuser  # noqa: E402

INNER_ENV = "TAGMEM_SOAK_IN_NAMESPACE"
MNT = Path("/run/tagmem")
SOCK = Path("/run/tagmem.sock")


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the daemon -------------------------------------------------------------

class Daemon:
    def __init__(self, tagmemfs: Path, log_path: Path):
        self.log = open(log_path, "w")
        self.log_path = log_path
        parent_dev = os.stat(MNT).st_dev
        self.proc = subprocess.Popen([str(tagmemfs), "-f", "--uevents", "udev", str(MNT)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while os.stat(MNT).st_dev == parent_dev or not SOCK.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"tagmemfs exited {self.proc.returncode}: "
                                   f"{log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("tagmemfs did not mount within 300 s")
            time.sleep(0.01)

    def sample(self) -> dict:
        pid = self.proc.pid
        out = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        out["cpu_s"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return out

    def stop(self) -> int | None:
        rc = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        else:
            rc = self.proc.returncode
        subprocess.run(["umount", "-l", str(MNT)], capture_output=True)
        self.log.close()
        return rc


# -- churn ------------------------------------------------------------------

class Churn:
    """Takes random devices away and brings them back (bench/run.py's Stash),
    recording each change with its time, so that readers' errors can be
    checked against what was on the host when they happened."""

    def __init__(self, host_root: Path, n: int, absent_target: int, seed: int):
        from run import Stash  # bench/run.py: one device out of sysfs and /dev, and back
        from uevent import UdevSender
        self.stash = Stash(host_root, hg.dax_major())
        self.sender = UdevSender()
        self.n = n
        self.absent_target = absent_target
        self.rng = random.Random(seed)
        self.away: set[int] = set()
        self.timeline: list[tuple[float, int, str]] = []  # (time, index, "remove"/"add")
        self.ops = 0

    @staticmethod
    def where(i: int) -> tuple[int, int]:
        return divmod(i, hg.SCALE_DEVICES_PER_REGION)

    def step(self) -> None:
        remove = len(self.away) < self.absent_target or (
            self.rng.random() < 0.5 and len(self.away) < 2 * self.absent_target)
        if remove or not self.away:
            i = self.rng.randrange(self.n)
            while i in self.away:
                i = self.rng.randrange(self.n)
            region, dev_id = self.where(i)
            self.timeline.append((time.time(), i, "remove"))
            p = self.stash.remove(region, dev_id)
            self.sender.send("unbind", p["devpath"], "dax")
            self.sender.send("remove", p["devpath"], "dax")
            self.away.add(i)
        else:
            i = self.rng.choice(sorted(self.away))
            region, dev_id = self.where(i)
            self.timeline.append((time.time(), i, "add"))
            p = self.stash.add(region, dev_id)
            props = dict(MAJOR=str(self.stash.major), MINOR=str(p["minor"]), DEVNAME=p["name"])
            self.sender.send("add", p["devpath"], "dax", **props)
            self.sender.send("bind", p["devpath"], "dax", DRIVER="device_dax", **props)
            self.away.discard(i)
        self.ops += 1

    def close(self) -> None:
        self.sender.close()


def explain(errors: list[dict], timeline: list[tuple[float, int, str]], grace: float) -> dict:
    """Splits reader errors into explained (the tag was away, or had just changed)
    and unexplained ones."""
    changes: dict[int, list[tuple[float, str]]] = {}
    for t, i, what in timeline:
        changes.setdefault(i, []).append((t, what))
    explained, unexplained = 0, []
    for e in errors:
        hist = changes.get(e["i"], [])
        before = [w for t, w in hist if t <= e["t"]]
        away = bool(before) and before[-1] == "remove"
        near = any(abs(t - e["t"]) <= grace for t, _ in hist)
        if e["errno"] in (errno.ENOENT, errno.ESTALE) and (away or near):
            explained += 1
        elif e["errno"] == 0 and near:  # content of a tag caught mid-change
            explained += 1
        else:
            unexplained.append(e)
    return {"explained": explained, "unexplained": unexplained}


# -- readers ----------------------------------------------------------------

def reader(n: int, seed: int, stop_at: float, out_path: str, counts) -> None:
    """One process: random tags, four operations each; failures to out_path."""
    rng = random.Random(seed)
    ops = 0
    with open(out_path, "w") as out:
        # An hour of errors on tags that are away runs into millions: one
        # short line each, with a detail only for the unexpected ones.
        def fail(i, op, err, detail=""):
            out.write(f"{time.time():.4f} {i} {op} {err}"
                      + ("" if err == errno.ENOENT else " " + json.dumps(detail)) + "\n")

        while time.time() < stop_at:
            i = rng.randrange(n)
            tag = hg.scale_tag(i)
            region, dev_id = divmod(i, hg.SCALE_DEVICES_PER_REGION)
            d = MNT / tag
            for op in ("stat", "metadata", "readlink", "data"):
                ops += 1
                try:
                    if op == "stat":
                        os.stat(d)
                    elif op == "metadata":
                        m = json.loads((d / "metadata").read_bytes())
                        if m.get("tag") != tag:
                            fail(i, op, 0, f"metadata of another tag: {m.get('tag')}")
                    elif op == "readlink":
                        target = os.readlink(d / "dev")
                        if target != f"/dev/dax{region}.{dev_id}":
                            fail(i, op, 0, f"dev -> {target}")
                    else:
                        os.stat(d / "data")
                except OSError as e:
                    fail(i, op, e.errno or -1, str(e))
                    break  # the tag is gone: its other files will be too
                except ValueError as e:  # JSON
                    fail(i, op, 0, f"bad metadata: {e}")
            if ops % 1000 < 4:
                out.flush()
    counts.put(ops)


# -- report -----------------------------------------------------------------

def slope_per_hour(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 0.0 if var == 0 else 3600 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var


def picks(s: list) -> list:
    """About ten samples, evenly spaced, the last one included."""
    idx = sorted(set(range(0, len(s), max(1, len(s) // 10))) | ({len(s) - 1} if s else set()))
    return [s[i] for i in idx]


def render(r: dict) -> str:
    s = r["samples"]
    warm = [x for x in s if x["t"] >= r["warmup_s"]] or s
    rss = [x["VmRSS"] for x in warm]
    fds = [x["fds"] for x in warm]
    ts = [x["t"] for x in warm]
    cpu = s[-1]["cpu_s"] - s[0]["cpu_s"] if len(s) > 1 else 0.0
    span = s[-1]["t"] - s[0]["t"] if len(s) > 1 else 1.0
    ok = lambda b: "yes" if b else "**NO**"  # noqa: E731
    rows = [
        ("duration (s) / tags / churn operations", f"{r['duration_s']} / {r['tags']} / "
         f"{r['churn_ops']} ({r['churn_ops'] / r['duration_s']:.1f}/s, ~{r['absent']} away)"),
        ("RSS after warm-up (KiB): first / last / min / max",
         f"{rss[0]} / {rss[-1]} / {min(rss)} / {max(rss)}"),
        ("RSS trend after warm-up (KiB per hour, least squares)",
         f"{slope_per_hour(ts, rss):+.0f}"),
        ("open fds after warm-up: first / last / min / max",
         f"{fds[0]} / {fds[-1]} / {min(fds)} / {max(fds)}"),
        ("fd trend after warm-up (per hour)", f"{slope_per_hour(ts, fds):+.1f}"),
        ("daemon CPU (utime+stime) over the run", f"{cpu:.1f} s = {100 * cpu / span:.1f}% "
         "of one CPU"),
        ("threads (min / max)", f"{min(x['Threads'] for x in s)} / "
         f"{max(x['Threads'] for x in s)}"),
        ("reader operations / errors (explained by churn) / unexplained errors",
         f"{r['reader_ops']} / {r['explained']} / {len(r['unexplained'])}"),
        ("watchers: events received, each (churn operations)",
         "; ".join(", ".join(f"{v} {k}" for k, v in sorted(w.items()))
                   for w in r["watch_events"]) + f" ({r['churn_ops']})"),
        ("watchers alive at the end", ok(r["watchers_alive"])),
        ("abusers (nobody): connections / refused / malformed requests",
         f"{r['abuse']['connections']} / {r['abuse']['refused']} / {r['abuse']['malformed']}"),
        ("daemon alive to the end, exit status after SIGTERM",
         f"{ok(r['daemon_alive'])}, {r['daemon_rc']}"),
        ("log lines at warning or error", str(r["log_problems"])),
    ]
    out = [
        "<!-- SPDX-License-Identifier: Apache-2.0 -->",
        "# Soak test",
        "",
        f"`{r['command']}` on {r['machine']}, {r['date']}; binaries of {r['build']} "
        f"({r['version']}, tree at {r['commit']}).",
        f"Samples every {r['sample_every']} s in [soak.csv](soak.csv); warm-up "
        f"(first {r['warmup_s']:.0f} s) left out of the trends.",
        "",
        f"**Verdict: {'pass' if r['passed'] else 'FAIL'}** "
        "(no unexplained reader error, watchers alive, the daemon alive and stopped cleanly).",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
        "RSS and fds over time (every tenth sample):",
        "",
        "| t (s) | VmRSS (KiB) | fds | threads | CPU (s) | tags visible |",
        "|---|---|---|---|---|---|",
        *[f"| {x['t']:.0f} | {x['VmRSS']} | {x['fds']} | {x['Threads']} | {x['cpu_s']:.1f} | "
          f"{x['visible']} |" for x in picks(s)],
        "",
    ]
    if r["unexplained"]:
        out += ["Unexplained reader errors (first 20):", "", "```"]
        out += [json.dumps(e) for e in r["unexplained"][:20]]
        out += ["```", ""]
    out += [
        "How to read it: the fd count includes the abusers' idle connections (up to "
        f"{r['idle_conns']} held at any time, replaced in batches), so it is flat when the "
        "daemon closes every connection it is given back. Reader errors are explained when "
        "they are ENOENT/ESTALE on a tag that was away, or a tag that changed within "
        f"{r['grace_s']} s (the time a change takes to reach the mount). An abuser's "
        "connection counts as refused when connect() failed or was not accepted within 0.5 s. "
        "See bench/soak.py.",
        "",
    ]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=3600, help="seconds of churn (default 3600)")
    ap.add_argument("--tags", type=int, default=10000)
    ap.add_argument("--absent", type=int, default=100, help="devices away at a time")
    ap.add_argument("--churn-pause", type=float, default=0.05,
                    help="seconds between churn operations")
    ap.add_argument("--readers", type=int, default=2)
    ap.add_argument("--watchers", type=int, default=2)
    ap.add_argument("--abusers", type=int, default=1)
    ap.add_argument("--idle-conns", type=int, default=200, help="idle connections per abuser")
    ap.add_argument("--sample-every", type=float, default=10.0)
    ap.add_argument("--grace", type=float, default=2.0)
    ap.add_argument("--build-dir", default=os.environ.get("TAGMEM_BUILD_DIR", REPO / "build"))
    ap.add_argument("--out-dir", default=str(REPO / "docs"))
    args = ap.parse_args()
    command = shlex.join(["sudo", "bench/soak.sh", *sys.argv[1:]])
    enter_private_namespace(__file__, INNER_ENV)

    build = Path(args.build_dir).resolve()
    tagmemfs, tagmem = build / "fs" / "tagmemfs", build / "cli" / "tagmem"
    for b in (tagmemfs, tagmem):
        if not b.is_file():
            sys.exit(f"{b} is missing: cmake --build {build}")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # Our own /run (libudev hears udev events only when /run/udev/control exists).
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "soak-run", "/run"], check=True)
    os.makedirs("/run/udev")
    Path("/run/udev/control").touch()
    MNT.mkdir()
    # Logs outside the namespace's /run, so that they outlive the run.
    work = Path(tempfile.mkdtemp(prefix="tagmem-soak-"))
    log(f"logs in {work}")

    res: dict = {"command": command, "tags": args.tags, "duration_s": args.duration,
                 "absent": args.absent, "sample_every": args.sample_every,
                 "grace_s": args.grace, "idle_conns": args.idle_conns,
                 "warmup_s": min(300.0, args.duration / 10)}
    res["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    res["machine"] = f"{platform.node()} ({os.cpu_count()} CPUs, {platform.release()})"
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    res["commit"] = commit or "unknown"
    res["build"] = str(build)
    res["version"] = subprocess.run([str(tagmemfs), "--version"], capture_output=True,
                                    text=True).stdout.strip()

    with hg.scratch_tmpfs() as scratch:
        host_root = scratch / "host"
        t0 = time.monotonic()
        hg.many(args.tags).write(host_root)
        log(f"host of {args.tags} tags written in {time.monotonic() - t0:.1f} s")
        from run import HostMount
        with HostMount(host_root):
            daemon = Daemon(tagmemfs, work / "tagmemfs.log")
            log(f"tagmemfs mounted (pid {daemon.proc.pid})")
            churn = Churn(host_root, args.tags, args.absent, seed=1)
            start = time.time()
            stop_at = start + args.duration
            ctx = mp.get_context("fork")
            counts = ctx.Queue()
            procs = [ctx.Process(target=reader, args=(args.tags, 100 + k, stop_at,
                                                      str(work / f"reader{k}.log"), counts))
                     for k in range(args.readers)]
            abuse_q = ctx.Queue()
            procs += [ctx.Process(target=abuser, args=(SOCK, stop_at, args.idle_conns, 200 + k,
                                                       abuse_q))
                      for k in range(args.abusers)]
            for p in procs:
                p.start()
            watchers = [subprocess.Popen([str(tagmem), "watch", "--json", "-m", str(MNT)],
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                        for _ in range(args.watchers)]
            watch_events: list[dict[str, int]] = [{} for _ in watchers]

            def count_events(k: int) -> None:
                for line in watchers[k].stdout:
                    try:
                        kind = json.loads(line).get("event", "?")
                    except ValueError:
                        kind = "unparsable"
                    watch_events[k][kind] = watch_events[k].get(kind, 0) + 1
            threads = [threading.Thread(target=count_events, args=(k,), daemon=True)
                       for k in range(len(watchers))]
            for t in threads:
                t.start()

            samples = []
            csv = open(out_dir / "soak.csv", "w")
            csv.write("t_s,vmrss_kib,vmhwm_kib,fds,threads,cpu_s,churn_ops,away,visible\n")
            next_sample = time.time()
            daemon_alive = True
            try:
                while time.time() < stop_at:
                    if time.time() >= next_sample:
                        if daemon.proc.poll() is not None:
                            daemon_alive = False
                            log(f"tagmemfs died: {daemon.proc.returncode}")
                            break
                        x = daemon.sample()
                        x["t"] = time.time() - start
                        x["visible"] = len(os.listdir(MNT))
                        samples.append(x)
                        csv.write(f"{x['t']:.1f},{x['VmRSS']},{x['VmHWM']},{x['fds']},"
                                  f"{x['Threads']},{x['cpu_s']:.2f},{churn.ops},"
                                  f"{len(churn.away)},{x['visible']}\n")
                        csv.flush()
                        log(f"t={x['t']:.0f}s RSS {x['VmRSS']} KiB, {x['fds']} fds, "
                            f"CPU {x['cpu_s']:.1f} s, {churn.ops} churn ops, "
                            f"{x['visible']} tags visible")
                        next_sample += args.sample_every
                    churn.step()
                    time.sleep(args.churn_pause)
            finally:
                for p in procs:
                    p.join(timeout=60)
                    if p.is_alive():
                        p.kill()
                time.sleep(2 * args.grace)  # the last changes reach the watchers
                res["watchers_alive"] = all(w.poll() is None for w in watchers)
                for w in watchers:
                    w.terminate()
                    w.wait()
                for t in threads:
                    t.join(timeout=10)
                csv.close()
                churn.close()
                res["daemon_alive"] = daemon_alive and daemon.proc.poll() is None
                res["daemon_rc"] = daemon.stop()

    res["samples"] = samples
    res["churn_ops"] = churn.ops
    res["watch_events"] = watch_events
    def drain(q, k):
        out = []
        for _ in range(k):
            try:
                out.append(q.get(timeout=5))
            except queue.Empty:  # a process that was killed
                pass
        return out
    res["reader_ops"] = sum(drain(counts, args.readers))
    abuse = {"connections": 0, "refused": 0, "malformed": 0}
    for st in drain(abuse_q, args.abusers):
        for k, v in st.items():
            abuse[k] += v
    res["abuse"] = abuse
    errors = []
    for k in range(args.readers):
        f = work / f"reader{k}.log"
        if f.exists():
            with open(f) as lines:
                for ln in lines:
                    t, i, op, err, *detail = ln.rstrip("\n").split(" ", 4)
                    errors.append({"t": float(t), "i": int(i), "op": op, "errno": int(err),
                                   "detail": json.loads(detail[0]) if detail else ""})
    ex = explain(errors, churn.timeline, args.grace)
    res["explained"], res["unexplained"] = ex["explained"], ex["unexplained"]
    log_text = (work / "tagmemfs.log").read_text(errors="replace")
    res["log_problems"] = sum(1 for ln in log_text.splitlines()
                              if " error" in ln.lower() or "warning" in ln.lower())
    res["passed"] = (not res["unexplained"] and res["watchers_alive"] and res["daemon_alive"]
                     and res["daemon_rc"] == 0 and bool(samples))
    (out_dir / "soak.md").write_text(render(res))
    log(f"wrote {out_dir / 'soak.md'} and {out_dir / 'soak.csv'}; "
        f"{'pass' if res['passed'] else 'FAIL'}")
    return 0 if res["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
