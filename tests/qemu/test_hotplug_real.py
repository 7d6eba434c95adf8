# SPDX-License-Identifier: Apache-2.0
"""Hotplug on real device-dax devices, in a QEMU guest (issue 5).

Why: tagmemfs follows namespaces that come and go while it runs. The guest has
no udevd, so tagmemfs takes its events straight from the kernel (--uevents
auto picks "kernel" when /run/udev/control is absent), which is exactly the
path a minimal host or an initramfs uses. One NVDIMM with a label area holds
TAG_KEEP from the start (prepared once) and free space for more.

While a program keeps a MAP_SHARED mapping of TAG_KEEP's data and rewrites
and verifies it the whole time (daxmap hold), and `tagmem watch --json`
records every change:

1. `tagmem wait TAG_NEW --timeout 60` is started before TAG_NEW exists;
   `ndctl create-namespace --uuid TAG_NEW` creates it; the wait returns 0 with
   /run/tagmem/TAG_NEW/data, the directory is listed, its data maps (bytes
   written through it read back from /dev/daxX.Y) and `tagmem resolve` agrees;
2. `ndctl disable-namespace` + `destroy-namespace` remove it: the directory
   vanishes within a bounded time and `tagmem wait TAG_NEW --timeout 1` exits 6;
3. the same again for TAG_NEW2;
4. the watch stream holds, per new tag, one event reaching "ready" and one
   "removed", no event twice, and nothing at all about TAG_KEEP; the holder
   finishes with its memory verified; SIGTERM unmounts and exits 0; no oops.

The guest timestamps milestones with /dev/kmsg (microseconds in dmesg), so the
test reports how long a new namespace takes to become visible in the mount.
Each run works on a fresh sparse copy of the prepared backing image: a run
that dies half-way cannot leave a namespace behind for the next one.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
from pathlib import Path

import pytest

import tagmemvm
import vmkit
from tagmemvm import section

MiB = vmkit.MiB
GUEST_TIMEOUT_S = 300
TAG_KEEP = "a1a1a1a1-0005-4000-8000-0000000000a1"
TAG_NEW = "b2b2b2b2-0005-4000-8000-0000000000b2"
TAG_NEW2 = "c3c3c3c3-0005-4000-8000-0000000000c3"
NEW_TAGS = {"new": TAG_NEW, "new2": TAG_NEW2}
NS_SIZE = "256M"
DATA_LEN = 8 * MiB
#: daxmap hold's run time: longer than everything the scenario does after it
#: starts (about 9 s under TCG on an idle host, so there is room for a busy
#: one); the guest then waits for it.
HOLD_S = 40
#: The longest a created or destroyed tag may take to appear or vanish.
VISIBLE_TIMEOUT_S = 30

SCENARIO_LIB = r"""
# Milestones with the kernel's microsecond clock (read back from dmesg).
tm_mark() { echo "<6>tm-mark $*" >/dev/kmsg; }

# The namespace (namespaceX.Y) whose UUID is the tag.
tm_ns_for_tag() { # TAG
    for n in /sys/bus/nd/devices/namespace*; do
        if [ "$(cat "$n/uuid" 2>/dev/null)" = "$1" ]; then echo "${n##*/}"; return 0; fi
    done
    echo "tm_ns_for_tag: no namespace has uuid $1" >&2
    return 1
}

# The one child process of PID (a subshell running a command).
tm_child_of() { # PID
    for s in /proc/[0-9]*/stat; do
        read -r c_pid c_comm c_state c_ppid c_rest 2>/dev/null <"$s" || continue
        if [ "$c_ppid" = "$1" ]; then echo "$c_pid"; return 0; fi
    done
    return 1
}

# Wait (up to 20 s) until PID sleeps in poll(2)/ppoll(2): a tagmem wait or
# watch client has then sent its request to the daemon.
tm_in_poll() { # PID
    p_i=0
    while :; do
        p_s=$(cut -d' ' -f1 "/proc/$1/syscall" 2>/dev/null || true)
        if [ "$p_s" = 7 ] || [ "$p_s" = 271 ]; then return 0; fi
        kill -0 "$1" 2>/dev/null || { echo "tm_in_poll: pid $1 is gone"; return 1; }
        p_i=$((p_i + 1))
        [ $p_i -lt 400 ] || { echo "tm_in_poll: pid $1 not in poll (syscall '$p_s')"; return 1; }
        sleep 0.05
    done
}

tm_holder_alive() { # WHEN
    if kill -0 "$HOLD" 2>/dev/null; then
        echo "TM-EVENT: holder alive $1"
    else
        echo "TM-EVENT: holder NOT alive $1"
        cat /tmp/hold.out
        return 1
    fi
}

# One tag's life: wait for it before it exists, create it, use it, destroy it.
tm_cycle() { # NAME TAG SEED
    c_name=$1 c_tag=$2 c_seed=$3
    echo "TM-EVENT: cycle $c_name start uptime=$(tm_now)"
    [ ! -e "$TM_MNT/$c_tag" ]
    # tagmem wait before the namespace exists; its exit status and time are kept.
    ( w_rc=0
      tagmem wait "$c_tag" --timeout 60 >"/tmp/wait-$c_name.out" 2>"/tmp/wait-$c_name.err" ||
          w_rc=$?
      tm_mark "$c_name wait-returned rc=$w_rc"
      echo "$w_rc" >"/tmp/wait-$c_name.rc" ) &
    c_waitsh=$!
    # A poller that looks the path up until it resolves (a negative lookup
    # the kernel cached must be invalidated for it to ever succeed).
    ( v_i=0
      until [ -e "$TM_MNT/$c_tag/data" ]; do
          v_i=$((v_i + 1))
          [ $v_i -lt {VISIBLE_POLLS} ] || { tm_mark "$c_name visible-timeout"; exit 1; }
          usleep 5000
      done
      tm_mark "$c_name visible" ) &
    c_vis=$!
    c_i=0
    until c_waitpid=$(tm_child_of $c_waitsh); do
        c_i=$((c_i + 1)); [ $c_i -lt 200 ] || { echo "no tagmem wait under $c_waitsh"; return 1; }
        sleep 0.05
    done
    tm_in_poll "$c_waitpid"
    # Barrier: this request is answered at once, in a daemon loop iteration
    # that also reads every request sent before it (the watch's, the wait's).
    [ "$(tagmem wait $TAG_KEEP --timeout 20)" = "$TM_MNT/$TAG_KEEP/data" ]
    kill -0 "$c_waitpid"
    echo "TM-EVENT: $c_name wait pending before create uptime=$(tm_now)"

    tm_mark "$c_name create-start"
    tm_section "create-$c_name" ndctl create-namespace -r region0 -m devdax --uuid "$c_tag" \
        -a 2M -s {NS_SIZE}
    tm_mark "$c_name create-end"
    c_rc=0; wait "$c_waitsh" || c_rc=$?
    c_rc2=0; wait "$c_vis" || c_rc2=$?
    tm_section "wait-$c_name" cat "/tmp/wait-$c_name.out"
    sed "s/^/[stderr wait-$c_name] /" "/tmp/wait-$c_name.err"
    echo "TM-WAIT $c_name rc=$(cat /tmp/wait-$c_name.rc)"
    [ "$(cat /tmp/wait-$c_name.rc)" = 0 ]
    [ $c_rc2 -eq 0 ]
    c_dev=$(vmkit_dax_for_tag "$c_tag")
    c_ns=$(tm_ns_for_tag "$c_tag")
    echo "TM-DEV $c_name tag=$c_tag dev=$c_dev ns=$c_ns"
    tm_section "ls-$c_name" ls -1 "$TM_MNT"
    tm_section "resolve-$c_name" tagmem resolve "$c_tag"
    tm_section "readlink-$c_name" readlink "$TM_MNT/$c_tag/dev"
    tm_section "show-$c_name" tagmem show --json "$c_tag"
    tm_section "metadata-$c_name" cat "$TM_MNT/$c_tag/metadata"
    [ "$(tagmem resolve "$c_tag")" = "$c_dev" ]
    [ "$(readlink "$TM_MNT/$c_tag/dev")" = "$c_dev" ]
    daxmap write "$TM_MNT/$c_tag/data" "$c_seed" {DATA_LEN}
    daxmap verify "$c_dev" "$c_seed" {DATA_LEN}
    daxmap verify "$TM_MNT/$c_tag/data" "$c_seed" {DATA_LEN}
    echo "TM-EVENT: $c_name data path checked"
    tm_holder_alive "after creating $c_name"

    # A poller that looks the tag up until it is gone (the kernel caches the
    # name for a day unless tagmemfs invalidates it).
    ( g_i=0
      while [ -e "$TM_MNT/$c_tag" ]; do
          g_i=$((g_i + 1))
          [ $g_i -lt {VISIBLE_POLLS} ] || { tm_mark "$c_name gone-timeout"; exit 1; }
          usleep 5000
      done
      tm_mark "$c_name gone" ) &
    c_gone=$!
    tm_mark "$c_name disable-start"
    ndctl disable-namespace "$c_ns"
    tm_mark "$c_name disable-end"
    ndctl destroy-namespace -f "$c_ns"
    tm_mark "$c_name destroy-end"
    c_rc=0; wait "$c_gone" || c_rc=$?
    if [ $c_rc -ne 0 ]; then echo "TM-EVENT: $c_name still in $TM_MNT"; return 1; fi
    tm_section "ls-gone-$c_name" ls -1 "$TM_MNT"
    if ls -1 "$TM_MNT" | grep -q "$c_tag"; then echo "$c_tag still listed"; return 1; fi
    c_rc=0; tagmem wait "$c_tag" --timeout 1 || c_rc=$?
    echo "TM-WAIT-GONE $c_name rc=$c_rc"
    [ $c_rc -eq 6 ]
    c_rc=0; tagmem resolve "$c_tag" >/dev/null 2>&1 || c_rc=$?
    echo "TM-RESOLVE-GONE $c_name rc=$c_rc"
    tm_holder_alive "after destroying $c_name"
    echo "TM-EVENT: cycle $c_name done uptime=$(tm_now)"
}
"""


def _seed() -> int:
    return random.getrandbits(62) | 1


def _run_image(assets: vmkit.Assets, tmp_path: Path) -> vmkit.NvdimmSpec:
    """TAG_KEEP prepared once on hotplug-base.img (a boot the first time),
    then a sparse copy of it for this run."""
    base = vmkit.NvdimmSpec(assets.cache_dir / "images" / "hotplug-base.img", "1G")
    vmkit.prepare_nvdimm(base, [TAG_KEEP], NS_SIZE, assets=assets)
    run = tmp_path / "hotplug-run.img"
    with vmkit._locked(Path(f"{base.path}.lock")):
        subprocess.run(["cp", "--sparse=always", str(base.path), str(run)], check=True)
    return vmkit.NvdimmSpec(run, "1G")


def scenario(seeds: dict[str, int]) -> str:
    lib = (SCENARIO_LIB.replace("{VISIBLE_POLLS}", str(VISIBLE_TIMEOUT_S * 200))
           .replace("{NS_SIZE}", NS_SIZE).replace("{DATA_LEN}", str(DATA_LEN)))
    return lib + f"""
TAG_KEEP={TAG_KEEP}
KEEP_DEV=$(vmkit_dax_for_tag $TAG_KEEP)
echo "TM-DEV keep tag=$TAG_KEEP dev=$KEEP_DEV ns=$(tm_ns_for_tag $TAG_KEEP)"
if [ -e /run/udev/control ]; then echo "udevd is running in the guest"; exit 1; fi
tm_section ndctl-before ndctl list -N -v
# The kernel logs each uevent it sends (dynamic debug, KERN_DEBUG: in dmesg
# only), so the latency can be measured from the event itself.
for c in /proc/dynamic_debug/control /sys/kernel/debug/dynamic_debug/control; do
    if [ -w $c ]; then echo 'file lib/kobject_uevent.c +p' >$c && break; fi
done
tm_start -l debug
grep "events from" $TM_LOG
tm_section ls-start ls -1 $TM_MNT
tm_section keep-metadata-start cat $TM_MNT/$TAG_KEEP/metadata

: >/tmp/hold.out
daxmap hold $TM_MNT/$TAG_KEEP/data {HOLD_S} 4M >/tmp/hold.out 2>&1 &
HOLD=$!
# It rewrites and verifies without pause: niced, so it leaves the other vCPU's
# time to ndctl and tagmemfs (the latencies below are theirs).
renice -n 10 -p $HOLD >/dev/null
i=0
until grep -q "daxmap hold: mapped" /tmp/hold.out; do
    i=$((i + 1)); [ $i -lt 400 ] || {{ cat /tmp/hold.out; exit 1; }}; sleep 0.05
done
tm_mark "hold-start"
echo "TM-EVENT: holder mapped uptime=$(tm_now)"

tagmem watch --json >/tmp/watch.out 2>/tmp/watch.err &
WATCH=$!
tm_in_poll $WATCH
echo "TM-EVENT: watch started uptime=$(tm_now)"

tm_cycle new {TAG_NEW} {seeds['new']:#x}
tm_cycle new2 {TAG_NEW2} {seeds['new2']:#x}
tm_mark "cycles-done"
tm_section ls-end ls -1 $TM_MNT
tm_holder_alive "after the last change"

# The holder finishes by itself; the watch keeps listening meanwhile, so a
# late event (for TAG_KEEP, say) would still be caught.
rc=0; wait $HOLD || rc=$?
tm_mark "hold-end"
cat /tmp/hold.out
echo "TM-EVENT: holder exited rc=$rc"
[ $rc -eq 0 ]
kill -TERM $WATCH
rc=0; wait $WATCH || rc=$?
echo "TM-EVENT: watch stopped rc=$rc"
tm_section watch-json cat /tmp/watch.out
tm_section watch-err cat /tmp/watch.err
tm_section marks sh -c 'dmesg | grep "tm-mark "'
tm_section kobject-uevents sh -c 'dmesg | grep "kobject_uevent_env" || true'
tm_section keep-metadata-end cat $TM_MNT/$TAG_KEEP/metadata
tm_stop
"""


def _assert_clean_end(res: vmkit.BootResult) -> None:
    if res.oops:
        pytest.fail(f"guest {res.name}: the guest KERNEL OOPSED: {res.oops_summary}\n"
                    f"milestones reached: {tagmemvm.events(res)}\n--- oops ---\n{res.oops}")
    assert any(e.startswith("tagmemfs exited rc=0") for e in tagmemvm.events(res)), \
        f"tagmemfs did not exit 0 on SIGTERM: {tagmemvm.events(res)}\n{res.tail()}"
    res.check()


def _marks(res: vmkit.BootResult) -> dict[str, float]:
    out: dict[str, float] = {}
    for t, what in re.findall(r"^\[\s*([\d.]+)\] tm-mark (.*)$", section(res, "marks"), re.M):
        out.setdefault(what.strip(), float(t))
    return out


def _kobject_uevents(res: vmkit.BootResult) -> list[tuple[float, str, str]]:
    """(time, kobject name, kobject address) of each uevent the kernel sent,
    when dynamic debug could log them (empty otherwise). The kernel does not
    log the action; the address tells the dax bus device daxX.Y from an nd
    device of the same name."""
    try:
        text = section(res, "kobject-uevents")
    except vmkit.VmError:
        return []
    return [(float(t), n, p) for t, n, p in
            re.findall(r"^\[\s*([\d.]+)\] kobject: '([^']+)' \((\w+)\): kobject_uevent_env$",
                       text, re.M)]


def _ms(a: float, b: float) -> str:
    return f"{(b - a) * 1000:.0f} ms"


def test_hotplug_tags_come_and_go(vm_assets, product, guest_tools, vm_timings, tmp_path):
    nv = _run_image(vm_assets, tmp_path)
    seeds = {"new": _seed(), "new2": _seed()}
    initrd = tagmemvm.build_initrd(tmp_path / "hotplug.cpio", scenario(seeds), assets=vm_assets,
                                   product=product, tools=guest_tools)
    res = vmkit.boot(initrd, [nv], timeout_s=GUEST_TIMEOUT_S, name="hotplug",
                     log_path=tmp_path / "hotplug.log", assets=vm_assets)
    boot = f"{res.userland_s:.1f}s" if res.userland_s is not None else "?"
    scen = f"{res.scenario_s:.1f}s" if res.scenario_s is not None else "?"
    vm_timings["s5 hotplug"] = f"boot to /init {boot}, scenario {scen}, " \
                               f"guest total {res.elapsed_s:.1f}s"

    try:
        _check(res, vm_timings)
    except (AssertionError, vmkit.VmError, pytest.fail.Exception) as exc:
        if res.oops:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            pytest.fail(f"guest {res.name}: the guest KERNEL OOPSED: {res.oops_summary}\n"
                        f"then this check failed: {first}\n"
                        f"milestones reached: {tagmemvm.events(res)}\n--- oops ---\n{res.oops}")
        raise
    _assert_clean_end(res)


def _check(res: vmkit.BootResult, vm_timings) -> None:
    ev = tagmemvm.events(res)
    assert re.search(r"events from kernel, watch socket /run/tagmem\.sock", res.console), \
        f"tagmemfs did not take its events from the kernel\n{res.tail()}"
    assert section(res, "ls-start").split() == [TAG_KEEP], res.tail()

    devs = dict(re.findall(r"^TM-DEV (\w+) tag=\S+ dev=(\S+) ns=\S+$", res.console, re.M))
    for name, tag in NEW_TAGS.items():
        assert f"{name} wait pending before create" in " ".join(ev), \
            f"{name}: tagmem wait was not pending before the namespace existed\n{res.tail(60)}"
        # The wait started before the namespace returned 0 and printed the data path.
        assert re.search(rf"^TM-WAIT {name} rc=0$", res.console, re.M), \
            f"tagmem wait {tag} did not exit 0\n{res.tail(60)}"
        assert section(res, f"wait-{name}").strip() == f"/run/tagmem/{tag}/data"
        assert name in devs, res.tail(60)
        assert section(res, f"ls-{name}").split() == sorted([TAG_KEEP, tag])
        assert section(res, f"resolve-{name}").strip() == devs[name]
        assert section(res, f"readlink-{name}").strip() == devs[name]
        meta = json.loads(section(res, f"metadata-{name}"))
        assert meta == json.loads(section(res, f"show-{name}"))
        assert meta["tag"] == tag and meta["state"] == "ready" and meta["source"] == "nvdimm"
        # The namespace's size less the dax info block and its reserve.
        assert 0 < meta["size"] <= vmkit._parse_size(NS_SIZE) and meta["size"] % (2 * MiB) == 0
        assert meta["path"] == devs[name] and meta["align"] == 2 * MiB
        for line in (f"daxmap write: path=/run/tagmem/{tag}/data",
                     f"daxmap verify: path={devs[name]}",
                     f"daxmap verify: path=/run/tagmem/{tag}/data"):
            assert re.search(rf"^{re.escape(line)} .* OK$", res.console, re.M), line
        # Destroyed: gone from the listing, and a wait for it times out (exit 6).
        assert tag not in section(res, f"ls-gone-{name}").split()
        assert re.search(rf"^TM-WAIT-GONE {name} rc=6$", res.console, re.M), res.tail(60)
        assert re.search(rf"^TM-RESOLVE-GONE {name} rc=3$", res.console, re.M), \
            [ln for ln in res.console.splitlines() if "TM-RESOLVE-GONE" in ln]
        assert f"cycle {name} done" in " ".join(ev), res.tail(60)
    assert section(res, "ls-end").split() == [TAG_KEEP]
    assert json.loads(section(res, "keep-metadata-end")) == \
        json.loads(section(res, "keep-metadata-start")), f"{TAG_KEEP}'s metadata changed"

    # The mapping of TAG_KEEP kept working throughout.
    for when in ("after creating new", "after destroying new", "after creating new2",
                 "after destroying new2", "after the last change"):
        assert f"holder alive {when}" in ev, f"holder not alive {when}: {ev}"
    hold = re.search(r"daxmap hold: OK path=/run/tagmem/(\S+)/data iterations=(\d+) "
                     r"seconds=([\d.]+)", res.console)
    assert hold and hold.group(1) == TAG_KEEP and "holder exited rc=0" in ev, res.tail(60)
    vm_timings["s5 holder"] = f"{hold.group(2)} rewrite+verify passes in {hold.group(3)}s"

    # The watch stream.
    lines = [ln for ln in section(res, "watch-json").splitlines() if ln.strip()]
    events = [json.loads(ln) for ln in lines]
    stream = "\n".join(lines)
    assert section(res, "watch-err").strip() == "", section(res, "watch-err")
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)), f"seq not strictly increasing:\n{stream}"
    assert not [e for e in events if e["tag"] == TAG_KEEP], \
        f"watch reported events for {TAG_KEEP}, which never changed:\n{stream}"
    assert {e["tag"] for e in events} <= set(NEW_TAGS.values()), stream
    last_seq = 0
    for name, tag in NEW_TAGS.items():
        mine = [e for e in events if e["tag"] == tag]
        kinds = [(e["event"], e["state"]) for e in mine]
        assert mine, f"no watch event for {tag}:\n{stream}"
        # All of this tag's events come after the previous tag's.
        assert mine[0]["seq"] > last_seq, stream
        last_seq = mine[-1]["seq"]
        assert mine[0]["event"] == "added", f"{tag}: first event {kinds[0]}\n{stream}"
        assert mine[-1]["event"] == "removed", f"{tag}: last event {kinds[-1]}\n{stream}"
        assert [k for k, _ in kinds].count("added") == 1, f"{tag}: {kinds}\n{stream}"
        assert [k for k, _ in kinds].count("removed") == 1, f"{tag}: {kinds}\n{stream}"
        ready = [i for i, (k, s) in enumerate(kinds) if s == "ready" and k != "removed"]
        assert len(ready) == 1, f"{tag}: want one event reaching ready, got {kinds}\n{stream}"
        assert mine[ready[0]]["device"] == devs[name].rsplit("/", 1)[-1], stream
        # No duplicates: each event reports a change from the one before.
        for a, b in zip(mine, mine[1:]):
            assert (a["event"], a["state"], a["device"]) != (b["event"], b["state"],
                                                               b["device"]), \
                f"{tag}: duplicate event {b}\n{stream}"
        vm_timings[f"s5 watch {name}"] = " -> ".join(f"{k}({s})" for k, s in kinds)

    # Latencies inside the guest (kernel clock, microseconds).
    m = _marks(res)
    uevents = _kobject_uevents(res)
    for name in NEW_TAGS:
        c0, c1 = m[f"{name} create-start"], m[f"{name} create-end"]
        w = m[f"{name} wait-returned rc=0"]
        v = m[f"{name} visible"]
        d0, d1, d2 = m[f"{name} disable-start"], m[f"{name} disable-end"], m[f"{name} destroy-end"]
        g = m[f"{name} gone"]
        vm_timings[f"s5 {name} create"] = (
            f"ndctl create-namespace {_ms(c0, c1)}; wait returned {_ms(c0, w)} after its start "
            f"({_ms(c1, w)} after it returned); path visible {_ms(c1, v)} after it returned")
        vm_timings[f"s5 {name} destroy"] = (
            f"disable-namespace {_ms(d0, d1)}, destroy-namespace {_ms(d1, d2)}; "
            f"gone from the mount {_ms(d0, g)} after disable started "
            f"({_ms(d2, g)} after destroy returned)")
        # From the kernel's own uevents. The first one naming daxX.Y after
        # create-start is the dax bus device's "add" (sent before device_dax
        # probes it), the next one for that kobject its "bind" (sent once the
        # probe has finished: the device can be opened from then on).
        dax = devs[name].rsplit("/", 1)[-1]
        created = [(t, p) for t, n, p in uevents if n == dax and c0 <= t <= c1]
        if created:
            mine = [t for t, p in created if p == created[0][1]]
            add = mine[0]
            text = (f"'add {dax}' uevent -> path visible {_ms(add, v)}, "
                    f"-> tagmem wait returned {_ms(add, w)}")
            if len(mine) > 1:
                bind = mine[1]
                text += (f"; 'bind {dax}' (probe done) {_ms(add, bind)} after 'add'"
                         f"{', AFTER the wait returned' if bind > w else ''}")
            vm_timings[f"s5 {name} uevent to visible"] = text
        removed = [t for t, n, p in uevents if n == dax and d0 <= t <= g]
        if removed:
            vm_timings[f"s5 {name} uevent to gone"] = \
                f"first uevent for {dax} after disable-start -> gone {_ms(removed[0], g)}"
