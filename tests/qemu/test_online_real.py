# SPDX-License-Identifier: Apache-2.0
"""The opt-in to system RAM on real devices, in a QEMU guest (issue 13).

One NVDIMM on NUMA node 1 (memory-only, 512 MiB of RAM) holds three tagged
256 MiB devdax namespaces; memory blocks are 128 MiB, so the first one's
device (2 MiB into the namespace, struct pages in RAM) covers one whole
block. tagmem.conf says `online = allow` for ALLOW, nothing for DENY, and
`shareable = yes` + `online = allow` (but no `online-shareable`) for SHARE.
tagmemfs runs throughout, taking its events from the kernel.

1. Debian's kernel onlines hot-added memory itself (auto_online_blocks =
   online, into whatever zone it picks): `tagmem online ALLOW` refuses, exit
   13, before touching anything. The scenario then sets the policy to
   offline, as docs/online.md tells the administrator to.
2. `tagmem online DENY` exits 11; `tagmem online SHARE` exits 11 naming
   online-shareable; while `daxmap hold` maps ALLOW's data, `tagmem online
   ALLOW` exits 12 naming the holder's pid. After each refusal, nothing has
   changed: every device's driver, node 1's MemTotal, the mount's listing
   and each tag's files. The holder's memory verifies to the end.
3. `tagmem online ALLOW`: exit 0; the device is bound to kmem, node 1's
   MemTotal grew by the device's whole memory blocks (128 MiB), those
   blocks are online in ZONE_MOVABLE on node 1; tagmemfs shows ALLOW in
   state system-ram with its node and without `data`.
4. `tagmem offline ALLOW`: exit 0; device_dax again, MemTotal back where it
   was, and `data` reappears and maps (bytes written through it read back
   from /dev/daxX.Y).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

import tagmemvm
import vmkit
from tagmemvm import section

MiB = vmkit.MiB
GUEST_TIMEOUT_S = 300
ALLOW = "a110a110-0013-4000-8000-0000000000a1"
DENY = "de11de11-0013-4000-8000-0000000000de"
SHARE = "5aa15aa1-0013-4000-8000-0000000000ca"
NODE = 1
NS_SIZE = "256M"
DATA_LEN = 8 * MiB


def _image(assets: vmkit.Assets) -> vmkit.NvdimmSpec:
    spec = vmkit.NvdimmSpec(assets.cache_dir / "images" / "online.img", "1G", node=NODE)
    vmkit.prepare_nvdimm(spec, [ALLOW, DENY, SHARE], NS_SIZE, assets=assets)
    return spec


def scenario(seed: int) -> str:
    conf = tagmemvm.conf_text({ALLOW: {"online": "allow"},
                               DENY: {"name": "not-for-ram"},
                               SHARE: {"shareable": "yes", "online": "allow"}},
                              "issue 13: only ALLOW may become system RAM")
    return tagmemvm.heredoc("$TM_CONF", conf) + f"""
ALLOW={ALLOW} DENY={DENY} SHARE={SHARE}
A_DEV=$(vmkit_dax_for_tag $ALLOW)
D_DEV=$(vmkit_dax_for_tag $DENY)
S_DEV=$(vmkit_dax_for_tag $SHARE)
A_SYS=/sys/bus/dax/devices/${{A_DEV##*/}}
echo "TM-DEVS A=$A_DEV D=$D_DEV S=$S_DEV node=$(cat $A_SYS/target_node)" \
     "resource=$(cat $A_SYS/resource) size=$(cat $A_SYS/size)"
MEMINFO=/sys/devices/system/node/node{NODE}/meminfo

# Everything a change would touch, one line each: drivers, node memory,
# the mount's tags and each tag's files.
tm_state() {{
    for d in $A_DEV $D_DEV $S_DEV; do
        echo "driver ${{d##*/}} $(basename "$(readlink /sys/bus/dax/devices/${{d##*/}}/driver)")"
    done
    echo "memtotal $(grep MemTotal $MEMINFO | tr -s ' ' | cut -d' ' -f4)"
    echo "tags $(ls -1 $TM_MNT | tr '\\n' ' ')"
    for t in $ALLOW $DENY $SHARE; do echo "files $t $(ls -1 $TM_MNT/$t | tr '\\n' ' ')"; done
}}

# Waits (up to 20 s) until ALLOW's metadata says STATE.
tm_wait_state() {{ # STATE
    w_i=0
    until grep -q "\\"state\\": *\\"$1\\"" $TM_MNT/$ALLOW/metadata 2>/dev/null; do
        w_i=$((w_i + 1))
        [ $w_i -lt 400 ] || {{ echo "ALLOW never became $1"; cat $TM_MNT/$ALLOW/metadata; return 1; }}
        sleep 0.05
    done
}}

tm_start
tm_section state-start tm_state
tm_section policy-debian cat /sys/devices/system/memory/auto_online_blocks
tm_section block-size cat /sys/devices/system/memory/block_size_bytes
tm_section online-auto-policy tagmem online $ALLOW || true
tm_section state-auto-policy tm_state
echo offline >/sys/devices/system/memory/auto_online_blocks

tm_section online-deny tagmem online $DENY || true
tm_section state-deny tm_state
tm_section online-share tagmem online $SHARE || true
tm_section state-share tm_state

: >/tmp/hold.out
daxmap hold $TM_MNT/$ALLOW/data 120 4M >/tmp/hold.out 2>&1 &
HOLD=$!
i=0
until grep -q "daxmap hold: mapped" /tmp/hold.out; do
    i=$((i + 1)); [ $i -lt 400 ] || {{ cat /tmp/hold.out; exit 1; }}; sleep 0.05
done
echo "TM-HOLDER pid=$HOLD"
tm_section online-held tagmem online $ALLOW || true
tm_section state-held tm_state
kill -TERM $HOLD
rc=0; wait $HOLD || rc=$?
cat /tmp/hold.out
echo "TM-EVENT: holder exited rc=$rc"

tm_section online-allow tagmem online $ALLOW
tm_wait_state system-ram
tm_section state-online tm_state
tm_section metadata-online cat $TM_MNT/$ALLOW/metadata
tm_section blocks-online sh -c 'for b in /sys/devices/system/memory/memory*; do
    [ "$(cat $b/state)" = online ] || continue
    for n in $b/node*; do echo "${{b##*/}} $(cat $b/phys_index) ${{n##*/}} $(cat $b/valid_zones)"; done
done'
tm_section online-again tagmem online $ALLOW

tm_section offline-allow tagmem offline $ALLOW
tm_wait_state ready
tm_section state-offline tm_state
tm_section metadata-offline cat $TM_MNT/$ALLOW/metadata
tm_section offline-again tagmem offline $ALLOW
daxmap write $TM_MNT/$ALLOW/data {seed:#x} {DATA_LEN}
daxmap verify $A_DEV {seed:#x} {DATA_LEN}
echo "TM-EVENT: data path checked"
tm_stop
"""


def _rc(res: vmkit.BootResult, name: str) -> int:
    m = re.search(rf"^VMKIT-END {re.escape(name)} rc=(\d+)$", res.console, re.M)
    assert m, f"no section {name}\n{res.tail()}"
    return int(m.group(1))


def _state(res: vmkit.BootResult, name: str) -> dict[str, str]:
    out = {}
    for line in section(res, name).splitlines():
        key, _, value = line.partition(" ")
        if key in ("driver", "files"):
            k2, _, value = value.partition(" ")
            key = f"{key} {k2}"
        out[key] = value.strip()
    return out


def test_online_offline_and_every_refusal(vm_assets, product, guest_tools, vm_timings,
                                          tmp_path):
    nv = _image(vm_assets)
    seed = random.getrandbits(62) | 1
    initrd = tagmemvm.build_initrd(tmp_path / "online.cpio", scenario(seed), assets=vm_assets,
                                   product=product, tools=guest_tools)
    res = vmkit.boot(initrd, [nv], timeout_s=GUEST_TIMEOUT_S, name="online",
                     extra_args=vmkit.numa_args("1G", 2, 2), log_path=tmp_path / "online.log",
                     assets=vm_assets)
    boot = f"{res.userland_s:.1f}s" if res.userland_s is not None else "?"
    scen = f"{res.scenario_s:.1f}s" if res.scenario_s is not None else "?"
    vm_timings["s13 online"] = f"boot to /init {boot}, scenario {scen}, " \
                               f"guest total {res.elapsed_s:.1f}s"
    if res.oops:
        pytest.fail(f"the guest KERNEL OOPSED: {res.oops_summary}\n{res.oops}")
    _check(res)
    res.check()


def _check(res: vmkit.BootResult) -> None:
    m = re.search(r"^TM-DEVS A=(\S+) D=(\S+) S=(\S+) node=(\d+) resource=(\w+) size=(\d+)$",
                  res.console, re.M)
    assert m, res.tail()
    a_dev = m.group(1)
    a_name = a_dev.rsplit("/", 1)[1]
    assert int(m.group(4)) == NODE
    start = _state(res, "state-start")
    for dev in (m.group(1), m.group(2), m.group(3)):
        assert start[f"driver {dev.rsplit('/', 1)[1]}"] == "device_dax", start
    assert start["tags"].split() == sorted([ALLOW, DENY, SHARE])
    assert "data" in start[f"files {ALLOW}"].split()
    block = int(section(res, "block-size").strip(), 16)

    # 1. The kernel's own auto-online policy: refused before anything.
    assert section(res, "policy-debian").strip() == "online"
    stderr = tagmemvm.section_stderr(res, "online-auto-policy")
    assert _rc(res, "online-auto-policy") == 13, stderr
    assert "auto_online_blocks = online" in stderr
    assert _state(res, "state-auto-policy") == start

    # 2. Refusals, nothing changed.
    holder = re.search(r"^TM-HOLDER pid=(\d+)$", res.console, re.M)
    assert holder, res.tail()
    for name, code, words in [
            ("online-deny", 11, ["is not allowed to become system RAM", "'online = allow'"]),
            ("online-share", 11, ["is shareable", "online-shareable = allow"]),
            ("online-held", 12, ["is in use",
                                 f"pid {holder.group(1)}",
                                 "(daxmap) mapping"])]:
        stderr = tagmemvm.section_stderr(res, name)
        assert _rc(res, name) == code, f"{name}: {stderr}"
        for w in words + ["nothing was changed"]:
            assert w in stderr, f"{name}: {w!r} not in {stderr!r}"
        assert section(res, name) == "", name
        after = "state-" + name.split("-", 1)[1]
        assert _state(res, after) == start, f"{name} changed something"
    assert "daxmap hold: FAIL" not in res.console and "SIGBUS" not in res.console
    assert "TM-EVENT: holder exited rc=0" in res.console, res.tail()

    # 3. Online.
    assert _rc(res, "online-allow") == 0, tagmemvm.section_stderr(res, "online-allow")
    assert "is system RAM now" in section(res, "online-allow")
    online = _state(res, "state-online")
    assert online[f"driver {a_name}"] == "kmem"
    grown = (int(online["memtotal"]) - int(start["memtotal"])) * 1024
    assert grown == block, f"node {NODE} MemTotal grew by {grown}, not one {block} block"
    assert "data" not in online[f"files {ALLOW}"].split(), online
    assert online["tags"] == start["tags"]
    for t in (DENY, SHARE):
        assert online[f"files {t}"] == start[f"files {t}"]
    meta = json.loads(section(res, "metadata-online"))
    assert meta["state"] == "system-ram" and meta["tag"] == ALLOW
    assert meta["devices"][0]["mode"] == "system-ram"
    assert meta["devices"][0]["target_node"] == NODE
    # The device's blocks: those whose start lies in its range (node 1 also
    # has boot memory of its own).
    dev_start, dev_size = int(m.group(5), 16), int(m.group(6))
    blocks = [line.split() for line in section(res, "blocks-online").splitlines()]
    ours = [b for b in blocks if 0 <= int(b[1], 16) * block - dev_start < dev_size]
    assert len(ours) == 1, blocks
    assert ours[0][2] == f"node{NODE}" and ours[0][3] == "Movable", ours
    assert _rc(res, "online-again") == 0
    assert "already system RAM" in section(res, "online-again")

    # 4. Offline.
    assert _rc(res, "offline-allow") == 0, tagmemvm.section_stderr(res, "offline-allow")
    assert "is devdax again" in section(res, "offline-allow")
    assert _state(res, "state-offline") == start
    meta = json.loads(section(res, "metadata-offline"))
    assert meta["state"] == "ready" and meta["path"] == a_dev
    assert "already devdax" in section(res, "offline-again")
    assert "TM-EVENT: data path checked" in res.console
    assert any(e.startswith("tagmemfs exited rc=0") for e in tagmemvm.events(res)), res.tail()
