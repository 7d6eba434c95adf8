# SPDX-License-Identifier: Apache-2.0
"""The tagmem demo: two emulated hosts find one shared allocation by its tag.

Run by scripts/demo.sh after it installed the dependencies and built tagmem.
It boots two QEMU guests ("host A" and "host B") at the same time. Both map
one emulated NVDIMM backing file (share=on): the shared memory. On it sit
two devdax namespaces whose UUIDs are tags. Host B also has a local NVDIMM,
so the same allocation gets a different device name there. Each host runs
tagmemfs, looks at /run/tagmem, and the two exchange messages through their
mappings of /run/tagmem/<tag>/data. This script prints what each host saw,
then a summary. Kernel console output is kept out of the way unless a guest
fails.

Part 2 (issue 12): this machine hands one tag to two VMs (its own NUMA node
in each, metadata in a fw_cfg item); they ping-pong through their
/run/tagmem/<tag>/data and the host reads the last messages from its file.

Before both (issue 17), when a kernel with CXL Dynamic Capacity and a QEMU
whose extents carry tags are there (dcdkit, docs/dcd.md): two machines whose
CXL device's dynamic capacity is one host file are each given the same
tagged extent over QMP while tagmemfs runs; both find it by its tag and
exchange messages through it. Without them it is skipped with a note.

Usage: demo.py [--build DIR] [--rounds N] [--started EPOCH] [--verbose]
               [--no-dcd] [--dcd-rounds N] [--no-handoff] [--handoff-rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import textwrap
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import dcdkit  # noqa: E402
import tagmemvm  # noqa: E402
import vmkit  # noqa: E402

TAG = tagmemvm.TWO_HOST_SHARED
COLOR = sys.stdout.isatty() and os.environ.get("NO_COLOR") is None
WIDTH = min(shutil.get_terminal_size((100, 20)).columns, 100)


def bold(s: str) -> str:
    return f"\033[1m{s}\033[0m" if COLOR else s


def dim(s: str) -> str:
    return f"\033[2m{s}\033[0m" if COLOR else s


def green(s: str) -> str:
    return f"\033[32m{s}\033[0m" if COLOR else s


def red(s: str) -> str:
    return f"\033[31m{s}\033[0m" if COLOR else s


def heading(title: str) -> None:
    print()
    print(bold(f"== {title} " + "=" * max(0, WIDTH - len(title) - 4)))


def sub(title: str) -> None:
    print()
    print(bold(f"-- {title}"))


def indent(text: str, n: int = 4) -> str:
    return textwrap.indent(text.rstrip("\n"), " " * n)


class QuietLog:
    """vmkit's chatter, kept for when something fails."""

    def __init__(self, verbose: bool):
        self.lines: list[str] = []
        self.verbose = verbose

    def __call__(self, msg: str) -> None:
        self.lines.append(msg)
        if self.verbose:
            print(dim(f"   [vmkit] {msg}"), flush=True)


def watch(guest: vmkit.Guest, host: str, lock: threading.Lock, t0: float,
          label: str | None = None) -> None:
    """Print the milestones of one guest as they happen (host A pings)."""
    role = "ping" if host == "A" else "pong"
    steps = [
        (r"TAGMEM-STAGE: init", "kernel booted, /init running"),
        (r"TM-EVENT: tagmemfs mounted", "tagmemfs mounted /run/tagmem"),
        (rf"daxmap pingpong: role={role} connected", "found the other host in the shared memory"),
        (rf"daxmap pingpong: role={role} OK", "ping-pong finished"),
        (r"TAGMEM-VERDICT: PASS", "powered off"),
    ]
    for pattern, text in steps:
        try:
            guest.wait_for(pattern, timeout_s=guest.timeout_s)
        except vmkit.VmError:
            return
        with lock:
            print(f"   {label or 'host ' + host}  {time.monotonic() - t0:5.1f}s  {text}", flush=True)


def compact_metadata(meta: dict) -> str:
    """The metadata JSON, one top-level key per line (devices expanded)."""
    out = []
    for key, value in meta.items():
        if key == "devices" and isinstance(value, list):
            for i, dev in enumerate(value):
                out.append(f"devices[{i}]:")
                for k, v in dev.items():
                    out.append(f"    {k:<15} {json.dumps(v)}")
        else:
            out.append(f"{key:<19} {json.dumps(value)}")
    return "\n".join(out)


def show_host(res: vmkit.BootResult, host: str) -> dict:
    heading(f"Host {host}: what it sees")
    sub("ls -l /run/tagmem")
    print(indent(tagmemvm.section(res, "ls-mount")))
    sub(f"ls -l /run/tagmem/{TAG}")
    print(indent(tagmemvm.section(res, f"ls-{TAG}")))
    sub("tagmem list")
    print(indent(tagmemvm.section(res, "list")))
    sub(f"tagmem resolve {TAG}")
    print(indent(tagmemvm.section(res, f"resolve-{TAG}")))
    meta = tagmemvm.section_json(res, f"metadata-{TAG}")
    sub(f"cat /run/tagmem/{TAG}/metadata   (JSON, one key per line here)")
    print(indent(compact_metadata(meta)))
    return meta


def fail(results, log: QuietLog, log_dir: Path) -> int:
    heading("The demo did not complete")
    for res in results:
        print(f"   {res.summary()}")
        if not res.passed:
            if res.oops:
                print(red(f"   kernel oops: {res.oops_summary}"))
            print(dim(indent(res.tail(40), 6)))
    print(f"\n   Full guest consoles: {log_dir}/host-A.log, {log_dir}/host-B.log")
    print("   vmkit log:")
    print(dim(indent("\n".join(log.lines[-20:]), 6)))
    return 1


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=str(tagmemvm.build_dir()), help="CMake build dir")
    ap.add_argument("--rounds", type=int, default=1000, help="ping-pong round trips")
    ap.add_argument("--started", type=float, default=None,
                    help="epoch seconds when the demo started (for the total time)")
    ap.add_argument("--verbose", action="store_true", help="show vmkit's log lines")
    ap.add_argument("--no-dcd", action="store_true",
                    help="skip part 0, CXL Dynamic Capacity given to two machines")
    ap.add_argument("--dcd-rounds", type=int, default=100,
                    help="ping-pong round trips through the DCD tag")
    ap.add_argument("--no-handoff", action="store_true",
                    help="skip part 2, the host handing a tag to two VMs")
    ap.add_argument("--handoff-rounds", type=int, default=100,
                    help="ping-pong round trips between the two VMs")
    args = ap.parse_args(argv)
    t_start = time.monotonic()
    wall0 = args.started or time.time()
    build = Path(args.build).resolve()
    os.environ.setdefault("TAGMEM_BUILD_DIR", str(build))
    log = QuietLog(args.verbose)
    dcd_ok = True
    if not args.no_dcd:
        dcd_ok = dcd_demo(args, build, log)

    heading("tagmem demo: two hosts, one shared memory allocation, one tag")
    print(textwrap.dedent(f"""\
        Two emulated machines (QEMU, software emulation) share one memory
        device: an NVDIMM backed by the same host file. On it, devdax
        namespaces carry UUIDs, their "tags". Each machine runs tagmemfs,
        which publishes every tag as /run/tagmem/<tag>/. The tag used here:

            {bold(TAG)}  ("{tagmemvm.TWO_HOST_NAME}")
        """))

    heading("Preparing")
    t0 = time.monotonic()
    vmkit.ensure_host_tools(log)
    vmkit.probe_qemu()
    assets = vmkit.ensure_assets(log=log)
    print(f"   guest kernel   {assets.kver} "
          f"({'downloaded' if assets.downloaded else 'cached'}, {time.monotonic() - t0:.1f}s)")
    product = tagmemvm.product_binaries(build, assets.cache_dir, log)
    tools = tagmemvm.guest_tools(build, assets.cache_dir, log)
    print(f"   tagmem         {build / 'cli/tagmem'}")
    print(f"   tagmemfs       {build / 'fs/tagmemfs'}")
    hosts = tagmemvm.TwoHosts.in_cache(assets.cache_dir, "demo")
    t0 = time.monotonic()
    prep = hosts.prepare(assets, log)
    print(f"   shared memory  {hosts.shared.path}")
    print("                  1 GiB file; two 256 MiB devdax namespaces, tagged")
    for t in tagmemvm.TWO_HOST_TAGS:
        print(f"                    {t}")
    print("                  " + (f"labels written by a setup boot ({time.monotonic() - t0:.1f}s)"
                                 if prep else "(labels already there from an earlier run)"))
    log_dir = assets.cache_dir / "demo-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    initrd = tagmemvm.build_initrd(log_dir / "demo.cpio",
                                   tagmemvm.TwoHosts.scenario(args.rounds, stop_daemon=False),
                                   assets=assets, product=product, tools=tools, log=log)

    heading("Booting host A and host B at the same time")
    print("   host A: the shared NVDIMM only\n"
          "   host B: a local NVDIMM first, then the shared one (so its device names differ)\n")
    t_boot = time.monotonic()
    guests = tagmemvm.start_all(hosts.guest_configs(initrd, assets=assets, timeout_s=240,
                                                    log_dir=log_dir, echo=False, log=log))
    lock = threading.Lock()
    watchers = [threading.Thread(target=watch, args=(g, h, lock, t_boot), daemon=True)
                for g, h in zip(guests, "AB")]
    for w in watchers:
        w.start()
    results = tagmemvm.wait_all(guests)
    for w in watchers:
        w.join(2)
    boot_wall = time.monotonic() - t_boot
    if not all(r.passed for r in results):
        return fail(results, log, log_dir)
    a, b = results

    meta_a = show_host(a, "A")
    meta_b = show_host(b, "B")
    ping, pong = tagmemvm.parse_pingpong(a), tagmemvm.parse_pingpong(b)

    heading(f"Messages through /run/tagmem/{TAG[:8]}.../data")
    print("   Host A writes \"ping #k\" into its mapping; host B, spinning on its own mapping\n"
          "   of the same memory, reads it and answers \"pong #k <- <what it read>\".\n")
    n = len(ping.messages)
    show = list(range(3)) + ([None] if n > 5 else []) + list(range(max(3, n - 2), n))
    for i in show:
        if i is None:
            print(dim(f"   {'...':>7}   ({n - 5} more round trips)"))
            continue
        print(f"   #{i + 1:<6} A -> B  {pong.messages[i]!r:<18} B -> A  {ping.messages[i]!r}")

    heading("Summary")
    dev_a, dev_b = meta_a["path"], meta_b["path"]
    same = all(meta_a[k] == meta_b[k] for k in ("tag", "size", "name", "shareable"))
    ib_a = meta_a["devices"][0].get("infoblock_uuid")
    ib_b = meta_b["devices"][0].get("infoblock_uuid")
    r = ping.rtt_us
    rows = [
        ("tag", f"{TAG}  \"{meta_a['name']}\""),
        ("size", f"{meta_a['size'] / vmkit.MiB:g} MiB, align {meta_a['align'] // vmkit.MiB} MiB, "
                 f"shareable={str(meta_a['shareable']).lower()}"),
        ("host A device", f"{dev_a}   (region {meta_a['devices'][0]['region']})"),
        ("host B device", f"{dev_b}   (region {meta_b['devices'][0]['region']})"),
        ("same tag, same allocation",
         green("yes") + f"  (same namespace info block {ib_a})" if same and ib_a == ib_b
         else red(f"NO (info blocks {ib_a} / {ib_b})")),
        ("round trips", f"{n} through the shared memory in {ping.seconds * 1e3:.1f} ms"),
        ("round-trip time", f"median {r['median']:.1f} us, p99 {r['p99']:.1f} us, "
                            f"max {r['max']:.0f} us (guest clocks, software emulation)"),
        ("boot", f"host A /init after {a.userland_s:.1f}s, host B after {b.userland_s:.1f}s; "
                 f"both done after {boot_wall:.1f}s"),
        ("this script", f"{time.monotonic() - t_start:.1f}s"),
        ("total (incl. deps + build)", f"{time.time() - wall0:.1f}s"),
    ]
    for k, v in rows:
        print(f"   {k:<27} {v}")
    print(f"\n   Guest consoles: {log_dir}/host-A.log and host-B.log")
    print("   The same scenario, with assertions: tests/qemu/test_real_devdax.py "
          "(scripts/test.sh runs it)")
    ok = same and ib_a == ib_b and dev_a != dev_b
    if not args.no_handoff:
        ok = handoff_demo(args, assets, product, tools, log, log_dir) and ok
    return 0 if ok and dcd_ok else 1


def milestones(guest: vmkit.Guest, label: str, steps: list[tuple[str, str]], lock: threading.Lock,
               t0: float) -> None:
    """Print each step of one guest when its console line shows up; steps may
    come in any order and some may never come (they are then not printed)."""
    import re
    pending = [(re.compile(p), text) for p, text in steps]
    seen = 0
    while pending:
        lines = guest._lines[seen:]
        seen += len(lines)
        for _, line in lines:
            for item in list(pending):
                m = item[0].search(line)
                if m:
                    pending.remove(item)
                    text = item[1].format(*m.groups())
                    with lock:
                        print(f"   {label}  {time.monotonic() - t0:5.1f}s  {text}", flush=True)
        if guest.proc.poll() is not None and seen >= len(guest._lines):
            return
        time.sleep(0.1)


def dcd_demo(args, build: Path, log: QuietLog) -> bool:
    """Part 0 (issue 17): CXL Dynamic Capacity, the same tagged extent given
    to two machines at run time; True unless it ran and failed."""
    tag = dcdkit.SHARED_TAG
    off, length = dcdkit.SHARED_EXTENTS[0]
    heading("Part 0: CXL Dynamic Capacity, one tagged extent given to two machines")
    paths, missing = dcdkit.find_paths()
    if paths is None:
        print(textwrap.fill(f"Skipped: {missing}.", WIDTH - 4, initial_indent="   ",
                            subsequent_indent="   "))
        return True
    print(textwrap.dedent(f"""\
        Two emulated machines, each with a CXL memory device that has "dynamic
        capacity": memory the device (its fabric manager, here QEMU) adds and takes
        back at run time, in extents. Both devices' capacity is the same host file,
        as two hosts on one memory pool. A kernel with the DCD series shows each
        extent with its tag; tagmemfs publishes the tag as /run/tagmem/<tag>/ once
        a dax device has claimed the extent. Claimed by: {dcdkit.claim_mode()}
        (TAGMEM_DCD_CLAIM). The tag, given to both machines over QMP when they ask:

            {bold(tag)}  ({length // vmkit.MiB} MiB at offset {off // vmkit.MiB} MiB)
        """))
    heading("Preparing")
    vmkit.ensure_host_tools(log)
    assets = dcdkit.assets(paths)
    print(f"   guest kernel   {paths.kernel}  (CXL DCD series, everything built in)")
    print(f"   QEMU           {paths.qemu}  ({dcdkit.qemu_version(paths)})")
    product = tagmemvm.product_binaries(build, assets.cache_dir, log)
    tools = tagmemvm.guest_tools(build, assets.cache_dir, log)
    work = assets.cache_dir / "demo-logs" / "dcd"
    work.mkdir(parents=True, exist_ok=True)
    initrd = dcdkit.build_initrd(work / "dcd.cpio", dcdkit.two_hosts_scenario(args.dcd_rounds),
                                 assets=assets, product=product, tools=tools, log=log)
    heading("Booting host A and host B; each asks its device for the capacity")
    lock = threading.Lock()
    t_boot = time.monotonic()

    def on_add(host: str) -> None:
        with lock:
            print(f"   QMP     {time.monotonic() - t_boot:5.1f}s  cxl-add-dynamic-capacity to "
                  f"host {host}'s device: tag {tag[:8]}..., {length // vmkit.MiB} MiB at "
                  f"{off // vmkit.MiB} MiB", flush=True)

    steps = [
        (r"TAGMEM-STAGE: init", "kernel booted, /init running"),
        (r"DCD-EVENT: region (\S+)", "made a dynamic_ram_1 region ({0}): the administrator's step"),
        (r"TM-EVENT: tagmemfs mounted", "tagmemfs mounted /run/tagmem (no tag yet)"),
        (r"DCD-ASK: add T", "asks its host for the tagged capacity"),
        (r"DCD-EVENT: extent with the tag", "the kernel shows the extent, with its tag"),
        (r"DCD-EVENT: claimed \S+ by hand as (\S+)", "claimed it by hand: {0} took the tag"),
        (r"DCD-EVENT: tag ready in /run/tagmem dev=(\S+)",
         f"/run/tagmem/{tag[:8]}... is ready, dev -> {{0}}"),
        (r"daxmap pingpong: role=\w+ connected", "found the other host in the shared memory"),
        (r"daxmap pingpong: role=\w+ OK", "ping-pong finished"),
        (r"TM-EVENT: tagmemfs exited rc=0", "tagmemfs unmounted, powering off"),
    ]
    watchers = []

    def on_start(host: str, guest: vmkit.Guest) -> None:
        w = threading.Thread(target=milestones, args=(guest, f"host {host}", steps, lock, t_boot),
                             daemon=True)
        w.start()
        watchers.append(w)
    results, errors = dcdkit.run_two_hosts(paths, assets, initrd, work, 300, echo=False,
                                           on_start=on_start, on_add=on_add, log=log)
    for w in watchers:
        w.join(2)
    if errors or not all(r.passed for r in results):
        for exc in errors:
            print(red(f"   host side: {exc}"))
        fail(results, log, work)
        return False
    metas = []
    for res, h in zip(results, "AB"):
        heading(f"Host {h}: what it sees")
        sub("the extents of its DAX region (name offset length tag)")
        print(indent(tagmemvm.section(res, "extents")))
        sub("tagmem list")
        print(indent(tagmemvm.section(res, "list")))
        meta = tagmemvm.section_json(res, f"metadata-{tag}")
        sub(f"cat /run/tagmem/{tag}/metadata   (JSON, one key per line here)")
        print(indent(compact_metadata(meta)))
        metas.append(meta)
    ping, pong = tagmemvm.parse_pingpong(results[0]), tagmemvm.parse_pingpong(results[1])
    heading(f"Messages through /run/tagmem/{tag[:8]}.../data")
    n = len(ping.messages)
    for i in [i for i in (0, 1, n - 1) if 0 <= i < n]:
        print(f"   #{i + 1:<6} A -> B  {pong.messages[i]!r:<18} B -> A  {ping.messages[i]!r}")
    heading("Summary of part 0")
    same = all(m["tag"] == tag and m["state"] == "ready" and m["source"] == "dcd"
               and m["size"] == length for m in metas)
    ext = [[(e["offset"], e["length"]) for d in m["devices"] for e in d["extents"]]
           for m in metas]
    rows = [
        ("tag on both machines", (green("yes") if same else red("NO"))
         + f"  {tag}, source=dcd, {length // vmkit.MiB} MiB"),
        ("the same extent", (green("yes") if ext[0] == ext[1] == dcdkit.SHARED_EXTENTS
                             else red(f"NO {ext}")) + f"  offset {off:#x} of both devices"),
        ("devices", f"host A {metas[0]['path']}, host B {metas[1]['path']}"),
        ("round trips", f"{n} through the shared memory in {ping.seconds * 1e3:.1f} ms"),
        ("boot", f"both done after {time.monotonic() - t_boot:.1f}s"),
    ]
    for k, v in rows:
        print(f"   {k:<27} {v}")
    print(f"\n   Guest consoles: {work}/dcd-host-A.log and dcd-host-B.log")
    print("   With assertions: tests/qemu/test_dcd_real.py (CTest qemu_dcd_two_hosts)")
    return same and ext[0] == ext[1] and n == args.dcd_rounds


def handoff_demo(args, assets, product, tools, log: QuietLog, log_dir: Path) -> bool:
    """Part 2 (issue 12): this machine hands one tag to two virtual machines."""
    tag = tagmemvm.HANDOFF_TAG
    heading("Part 2: the host hands one tag to two virtual machines")
    print(textwrap.dedent(f"""\
        Now this machine is the host. It gives its tag {bold(tag[:8] + '...')}
        ("{tagmemvm.HANDOFF_NAME}", {tagmemvm.HANDOFF_SIZE // vmkit.MiB} MiB, shareable) to two
        guests with the arguments `tagmem vm-args` generates (asked of a synthetic
        host that has the tag as an hmem device): the tag becomes
        the guest's NUMA node 1 (memory-backend-file, share=on), the guest kernel
        makes it soft-reserved (memmap=), dax_hmem makes it a dax device, and the
        tag's metadata rides beside it in a QEMU fw_cfg item. Nothing is written
        into the memory. (This machine has no real devdax: a plain file stands in
        for /run/tagmem/<tag>/data, the one difference from real use.)
        """))
    backing = log_dir / "handoff-tag.data"
    digest = tagmemvm.handoff_host_file(backing)
    # `tagmem vm-args` on a synthetic host that has the tag (this one has none).
    generated = tagmemvm.vm_args_from_synthetic_host(Path(args.build).resolve(), log_dir)
    qemu_args = tagmemvm.with_backing_file(generated["qemu"], tag, backing)
    sub(f"tagmem vm-args --format json --memory 512M --cpus 1 {tag}: "
        "QEMU arguments and the guest kernel's parameter")
    print(indent(" ".join(generated["qemu"]), 4))
    print(indent(generated["kernel_cmdline"], 4))
    steps = f"""
echo "TM-EVENT: pingpong start uptime=$(tm_now)"
daxmap pingpong "$D" "$TM_ROLE" {args.handoff_rounds} 120
echo "TM-EVENT: pingpong done uptime=$(tm_now)"
"""
    initrd = tagmemvm.build_initrd(log_dir / "handoff.cpio", tagmemvm.handoff_scenario(tag, steps),
                                   assets=assets, product=product, tools=tools, log=log)
    heading("Booting VM 1 and VM 2 from the same host tag")
    t_boot = time.monotonic()
    guests = tagmemvm.start_all([
        dict(initrd=initrd, smp=1, timeout_s=300, name=f"vm-{h}",
             env={"TM_HOST": h, "TM_ROLE": role}, append=generated["kernel_cmdline"],
             machine_args=qemu_args, log_path=log_dir / f"vm-{h}.log", echo=False,
             assets=assets, log=log)
        for h, role in (("1", "ping"), ("2", "pong"))])
    lock = threading.Lock()
    watchers = [threading.Thread(target=watch, args=(g, h, lock, t_boot, f"VM {n}"), daemon=True)
                for g, h, n in zip(guests, "AB", "12")]
    for w in watchers:
        w.start()
    results = tagmemvm.wait_all(guests)
    for w in watchers:
        w.join(2)
    if not all(r.passed for r in results):
        fail(results, log, log_dir)
        return False
    metas = []
    for res, h in zip(results, "12"):
        heading(f"VM {h}: what it sees")
        sub("tagmem list")
        print(indent(tagmemvm.section(res, "list")))
        meta = tagmemvm.section_json(res, f"metadata-{tag}")
        sub(f"cat /run/tagmem/{tag}/metadata   (JSON, one key per line here)")
        print(indent(compact_metadata(meta)))
        metas.append(meta)
    ping, pong = tagmemvm.parse_pingpong(results[0]), tagmemvm.parse_pingpong(results[1])
    with open(backing, "rb") as fh:
        raw = fh.read(4096 + 128)
    host_ping = raw[32:128].split(b"\0")[0].decode(errors="replace")
    host_pong = raw[4096 + 32:4096 + 128].split(b"\0")[0].decode(errors="replace")
    heading("Summary of the hand-off")
    keys = ("tag", "size", "name", "shareable", "source")
    same = all(m[k] == metas[0][k] for m in metas for k in keys) and metas[0]["tag"] == tag
    perf_ok = all(m["devices"][0].get("performance") == tagmemvm.HANDOFF_PERF for m in metas)
    bytes_ok = host_ping == pong.messages[-1] and host_pong == ping.messages[-1] \
        if ping.messages and pong.messages else False
    rows = [
        ("tag in both VMs", (green("yes") if same else red("NO"))
         + f"  {tag} \"{metas[0]['name']}\", source={metas[0]['source']}"),
        ("host's performance data", (green("yes") if perf_ok else red("NO"))
         + f"  {json.dumps(metas[0]['devices'][0].get('performance_source', {}))}"),
        ("messages exchanged", f"{len(ping.messages)} round trips through data, "
                               f"last {pong.messages[-1]!r} / {ping.messages[-1]!r}"
         if ping.messages and pong.messages else red("none")),
        ("the host's file says", (green("same bytes") if bytes_ok else red("DIFFERENT"))
         + f"  offset 32: {host_ping!r}, offset 4128: {host_pong!r}"),
        ("boot", f"both VMs done after {time.monotonic() - t_boot:.1f}s"),
    ]
    for k, v in rows:
        print(f"   {k:<27} {v}")
    print(f"\n   VM consoles: {log_dir}/vm-1.log and vm-2.log; host file {backing} "
          f"(sha256 before the VMs: {digest[:16]}...)")
    print("   With assertions: tests/qemu/test_vm_handoff.py (CTest qemu_vm_handoff)")
    return same and perf_ok and bytes_ok


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (vmkit.VmError, tagmemvm.ProductMissing) as exc:
        print(red(f"\ndemo: {exc}"), file=sys.stderr)
        sys.exit(1)
