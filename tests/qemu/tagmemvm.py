# SPDX-License-Identifier: Apache-2.0
"""tagmemvm: tagmem and tagmemfs inside vmkit guests.

Why this exists: the real-devdax scenarios (test_real_devdax.py) and the demo
(demo.py, run by scripts/demo.sh) boot the same kind of guest: the product
binaries, the guest tools (daxmap, tagmem-runas), and a small shell library
that starts, reloads, kills and stops tagmemfs inside the guest. Keeping that
in one place means the demo a newcomer watches is the two-host test itself,
with nicer printing.

Only the Python 3 standard library is used (plus vmkit).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Mapping, Sequence

import vmkit

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

#: The product binaries inside the CMake build directory.
PRODUCT = {"tagmem": "cli/tagmem", "tagmemfs": "fs/tagmemfs"}
#: Guest tools and their sources (tests/qemu/tools).
TOOL_SOURCES = {"daxmap": "tools/daxmap.cpp", "tagmem-runas": "tools/runas.cpp",
                "tagmem-cdi-run": "tools/cdi_run.cpp"}
#: Host programs copied into every tagmem guest besides the product.
HOST_EXTRAS = ("fusermount3",)


class ProductMissing(vmkit.VmError):
    """tagmem or tagmemfs is not built: a test failure, never a skip."""


def build_dir() -> Path:
    """The CMake build directory: $TAGMEM_BUILD_DIR, else <repo>/build."""
    return Path(os.environ.get("TAGMEM_BUILD_DIR") or REPO / "build")


def _file_key(path: Path) -> str:
    st = path.stat()
    key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def product_binaries(build: Path, cache_dir: Path,
                     log: vmkit.Log = vmkit._default_log) -> dict[str, Path]:
    """tagmem and tagmemfs without their debug info (RelWithDebInfo binaries
    are ~15 MiB each; stripped they are <1 MiB and the initramfs stays small).
    Copies are cached by the source's path, size and mtime."""
    out: dict[str, Path] = {}
    for name, rel in PRODUCT.items():
        src = build / rel
        if not (src.is_file() and os.access(src, os.X_OK)):
            raise ProductMissing(f"{src} is not built (cmake --build {build} --target {name})")
        dst = cache_dir / "product" / _file_key(src) / name
        if not dst.is_file():
            for old in (cache_dir / "product").glob(f"*/{name}"):
                shutil.rmtree(old.parent, ignore_errors=True)
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(dst.name + f".{os.getpid()}.tmp")
            if shutil.which("objcopy"):
                vmkit._run(["objcopy", "--strip-debug", src, tmp])
            else:
                shutil.copy2(src, tmp)
            tmp.rename(dst)
            log(f"{name}: {src} -> {dst} ({dst.stat().st_size / vmkit.MiB:.1f} MiB)")
        out[name] = dst
    return out


def guest_tools(build: Path | None, cache_dir: Path,
                log: vmkit.Log = vmkit._default_log) -> dict[str, Path]:
    """daxmap and tagmem-runas: CMake-built ones from the build dir when
    present, else compiled with g++ (static when possible) into the cache,
    keyed by the source's content so an edit recompiles."""
    tools: dict[str, Path] = {}
    for name, rel in TOOL_SOURCES.items():
        if build:
            for cand in (build / "tests/qemu" / name, build / name):
                if cand.is_file() and os.access(cand, os.X_OK):
                    tools[name] = cand
                    break
        if name in tools:
            continue
        src = HERE / rel
        key = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
        dst = cache_dir / "tools" / key / name  # keeps the name: guests run it by name
        if not dst.is_file():
            if not shutil.which("g++"):
                raise vmkit.VmError(f"guest tool {name} not built and no g++ to build it")
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(dst.name + f".{os.getpid()}.tmp")
            base = ["g++", "-std=c++20", "-O2", "-Wall", "-Wextra", "-o", str(tmp), str(src)]
            if subprocess.run([*base, "-static"], capture_output=True).returncode != 0:
                vmkit._run(base)
            tmp.rename(dst)
            log(f"compiled {name} -> {dst}")
        tools[name] = dst
    return tools


# --------------------------------------------------------------------------
# the guest side: a shell library sourced by every tagmem scenario
# --------------------------------------------------------------------------

GUEST_SH = r"""# tagmem guest helpers (generated from tests/qemu/tagmemvm.py).
TM_MNT=/run/tagmem
TM_LOG=/tmp/tagmemfs.log
TM_PID=
TM_CONF=/etc/tagmem/tagmem.conf

tm_now() { cut -d' ' -f1 /proc/uptime; }

# Mount ID of the top tagmemfs mount at $TM_MNT (live or stale), or nothing.
tm_mount_id() {
    grep "^[^ ]* [^ ]* [^ ]* [^ ]* $TM_MNT .* - fuse\.tagmem " /proc/self/mountinfo | tail -n 1 |
        cut -d' ' -f1
}
tm_mounted() { [ -n "$(tm_mount_id)" ]; }

# Start tagmemfs in the foreground of a background job; return once it
# serves. Ready means: this pid logged "mounted" (info level: a daemon started
# with -l warning or error never reports it). Not mountinfo alone: a stale
# mount left by a killed daemon stays listed until the new daemon detaches it,
# a new mount may reuse its ID, and two reads of mountinfo (stale one, then
# none) once let a restart look done while /run/tagmem was the empty
# directory under it.
tm_start() { # [tagmemfs options...]
    echo "=== $(tm_now) tagmemfs -f $* $TM_MNT" >>"$TM_LOG"
    tagmemfs -f "$@" "$TM_MNT" >>"$TM_LOG" 2>&1 &
    TM_PID=$!
    tm_i=0
    until grep -q "^tagmemfs\[$TM_PID\]: info: mounted " "$TM_LOG"; do
        if ! kill -0 "$TM_PID" 2>/dev/null; then
            tm_rc=0
            wait "$TM_PID" || tm_rc=$?
            echo "tm_start: tagmemfs exited rc=$tm_rc before mounting"
            TM_PID=
            return 1
        fi
        tm_i=$((tm_i + 1))
        if [ $tm_i -gt 400 ]; then echo "tm_start: no mount after 20s"; return 1; fi
        sleep 0.05
    done
    tm_mounted || { echo "tm_start: $TM_MNT is not a tagmemfs mount"; return 1; }
    # The daemon logs before it serves; one lookup proves it does.
    timeout 20 ls "$TM_MNT" >/dev/null || return 1
    echo "TM-EVENT: tagmemfs mounted pid=$TM_PID uptime=$(tm_now)"
}

# SIGHUP and wait (up to 10 s) for the daemon to log the rescan it triggers.
tm_reload() {
    tm_n0=$(grep -c 'rescan (SIGHUP)' "$TM_LOG" || true)
    kill -HUP "$TM_PID"
    tm_i=0
    while [ "$(grep -c 'rescan (SIGHUP)' "$TM_LOG" || true)" -le "$tm_n0" ]; do
        tm_i=$((tm_i + 1))
        if [ $tm_i -gt 200 ]; then echo "tm_reload: no 'rescan (SIGHUP)' logged in 10s"; break; fi
        sleep 0.05
    done
    echo "TM-EVENT: tagmemfs reloaded uptime=$(tm_now)"
}

# Wait (up to 10 s) until `stat -L -c FMT PATH` prints WANT.
tm_wait_stat() { # FMT PATH WANT
    tm_i=0
    while [ "$(stat -L -c "$1" "$2" 2>&1)" != "$3" ]; do
        tm_i=$((tm_i + 1))
        if [ $tm_i -gt 200 ]; then
            echo "tm_wait_stat: $2 is '$(stat -L -c "$1" "$2" 2>&1)', want '$3'"
            return 1
        fi
        sleep 0.05
    done
}

# SIGTERM: tagmemfs must unmount and exit 0.
tm_stop() {
    kill -TERM "$TM_PID"
    tm_rc=0
    wait "$TM_PID" || tm_rc=$?
    echo "TM-EVENT: tagmemfs exited rc=$tm_rc uptime=$(tm_now)"
    TM_PID=
    [ $tm_rc -eq 0 ]
    if tm_mounted; then echo "tm_stop: $TM_MNT still mounted"; return 1; fi
}

# Like vmkit_section, but the text always ends with a newline (metadata
# files need not), stderr is printed after the section (so the section holds
# exactly what the command printed on stdout), and the command's exit status
# is the function's.
tm_section() { # NAME CMD...
    tm_n=$1
    shift
    echo "VMKIT-BEGIN $tm_n"
    tm_rc=0
    "$@" >/tmp/tm_section.out 2>/tmp/tm_section.err || tm_rc=$?
    cat /tmp/tm_section.out
    [ -z "$(tail -c 1 /tmp/tm_section.out)" ] || echo
    echo "VMKIT-END $tm_n rc=$tm_rc"
    sed "s/^/[stderr $tm_n] /" /tmp/tm_section.err
    return $tm_rc
}

# /dev/daxX.Y of the one dax device whose namespace has no uuid attribute
# (a label-less NVDIMM namespace converted to devdax).
tm_dax_without_uuid() {
    tm_found=
    for d in /sys/bus/dax/devices/*; do
        [ -e "$d" ] || continue
        real=$(readlink -f "$d")
        nd=${real%/*}
        [ -r "$nd/namespace" ] || continue
        ns=$(cat "$nd/namespace")
        [ -e "${nd%/*}/$ns/uuid" ] && continue
        [ -z "$tm_found" ] || { echo "tm_dax_without_uuid: $tm_found and ${d##*/}" >&2; return 1; }
        tm_found=${d##*/}
    done
    [ -n "$tm_found" ] || { echo "tm_dax_without_uuid: none" >&2; return 1; }
    echo "/dev/$tm_found"
}

# The inclusive physical range of a dax device, START-END in hex, from sysfs.
tm_dax_range() { # /dev/daxX.Y
    tm_s=$(cat "/sys/bus/dax/devices/${1##*/}/resource")
    tm_z=$(cat "/sys/bus/dax/devices/${1##*/}/size")
    printf '0x%x-0x%x\n' $((tm_s)) $((tm_s + tm_z - 1))
}

# Everything a reader wants to see about the mount and some tags.
tm_show() { # TAG...
    tm_section ls-mount ls -l "$TM_MNT"
    tm_section list tagmem list
    tm_section list-json tagmem list --json
    for t in "$@"; do
        tm_section "ls-$t" ls -l "$TM_MNT/$t"
        tm_section "size-$t" cat "$TM_MNT/$t/size"
        tm_section "shareable-$t" cat "$TM_MNT/$t/shareable"
        tm_section "dev-$t" readlink "$TM_MNT/$t/dev"
        tm_section "metadata-$t" cat "$TM_MNT/$t/metadata"
        tm_section "show-$t" tagmem show --json "$t"
        tm_section "resolve-$t" tagmem resolve "$t"
        tm_section "stat-$t" stat -L -c '%F|%u:%g|%a|%t:%T' "$TM_MNT/$t/data"
        tagmem show --json "$t" >/tmp/show.json
        if cmp -s /tmp/show.json "$TM_MNT/$t/metadata"; then
            echo "TM-METADATA-CMP $t identical"
        else
            echo "TM-METADATA-CMP $t differ"
        fi
    done
    tm_section regions sh -c 'for r in /sys/bus/nd/devices/region*; do
        echo "${r##*/} $(cat $r/resource) $(cat $r/size)"; done'
}

# At exit (also after a failure under sh -e) print the daemon's log.
tm_finish() {
    tm_exit=$?
    if [ -n "$TM_PID" ] && kill -0 "$TM_PID" 2>/dev/null; then
        kill -TERM "$TM_PID" 2>/dev/null || true
        sleep 0.5
    fi
    echo "VMKIT-BEGIN tagmemfs-log"
    cat "$TM_LOG" 2>/dev/null || true
    echo "VMKIT-END tagmemfs-log rc=0"
    exit $tm_exit
}
trap tm_finish EXIT
mkdir -p /etc/tagmem
: >"$TM_LOG"
"""


def build_initrd(out: os.PathLike | str, scenario: str, *, assets: vmkit.Assets,
                 product: Mapping[str, Path], tools: Mapping[str, Path],
                 files: Mapping[str, vmkit.FileSpec] | None = None,
                 log: vmkit.Log = vmkit._default_log) -> Path:
    """An initramfs with tagmem, tagmemfs, the guest tools, fusermount3
    and /vmkit/tagmem.sh, which the scenario sources first."""
    binaries: list = [(str(p), f"/usr/local/bin/{name}") for name, p in product.items()]
    binaries += [(str(p), f"/usr/local/bin/{name}") for name, p in tools.items()]
    binaries += [b for b in HOST_EXTRAS if shutil.which(b)]
    all_files: dict[str, vmkit.FileSpec] = {"/vmkit/tagmem.sh": GUEST_SH.encode()}
    all_files.update(files or {})
    return vmkit.build_initramfs(out, binaries, all_files,
                                 ". /vmkit/tagmem.sh\n" + scenario, assets=assets, log=log)


def conf_text(sections: Mapping[str, Mapping[str, str]], comment: str = "") -> str:
    """tagmem.conf(5) text: {tag: {key: value}}."""
    lines = [f"# {c}" for c in comment.splitlines()] if comment else []
    for tag, keys in sections.items():
        lines.append(f"[tag {tag}]")
        lines += [f"{k} = {v}" for k, v in keys.items()]
        lines.append("")
    return "\n".join(lines) + "\n"


def heredoc(path: str, text: str) -> str:
    """Shell that writes ``text`` to ``path`` in the guest."""
    return f"cat >{path} <<'TM_EOF'\n{text.rstrip(chr(10))}\nTM_EOF\n"


# --------------------------------------------------------------------------
# reading results
# --------------------------------------------------------------------------


def section(res: vmkit.BootResult, name: str) -> str:
    return res.section(name)


def without_ranges(shown: dict) -> dict:
    """`tagmem show --json` as root minus what only root sees (the physical
    ranges, 0400 in sysfs): exactly what the world-readable metadata holds."""
    out = json.loads(json.dumps(shown))
    for d in out.get("devices", []):
        d.pop("ranges", None)
    return out


def section_stderr(res: vmkit.BootResult, name: str) -> str:
    """What the command of tm_section NAME printed on stderr."""
    return "\n".join(re.findall(rf"^\[stderr {re.escape(name)}\] (.*)$", res.console, re.M))


def section_json(res: vmkit.BootResult, name: str):
    text = res.section(name)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise vmkit.VmError(f"guest {res.name}: section {name} is not JSON ({exc}):\n{text}")


@dataclasses.dataclass
class PingPong:
    role: str
    rounds: int
    seconds: float
    rtt_us: dict[str, float]  # min, median, p90, p99, max, mean
    messages: list[str]  # what this side received, in order
    connected_after_s: float


def parse_pingpong(res: vmkit.BootResult) -> PingPong:
    c = res.console
    ok = re.search(r"daxmap pingpong: role=(\w+) OK rounds=(\d+) seconds=([\d.]+)", c)
    if not ok:
        raise vmkit.VmError(f"guest {res.name}: no successful pingpong\n{res.tail()}")
    role = ok.group(1)
    stats = re.search(rf"daxmap pingpong: role={role} rounds=\d+ rtt_us (.*)", c)
    rtt = {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", stats.group(1))} if stats else {}
    conn = re.search(rf"daxmap pingpong: role={role} connected after ([\d.]+)s", c)
    msgs = re.findall(rf"^daxmap {role}: #\d+ got '(.*)'$", c, re.M)
    return PingPong(role, int(ok.group(2)), float(ok.group(3)), rtt, msgs,
                    float(conn.group(1)) if conn else float("nan"))


def events(res: vmkit.BootResult) -> list[str]:
    return re.findall(r"^TM-EVENT: (.*)$", res.console, re.M)


# --------------------------------------------------------------------------
# the two-host scenario, shared by test_real_devdax.py and demo.py
# --------------------------------------------------------------------------

#: Tags on the shared NVDIMM. The second one is the allocation both hosts use.
TWO_HOST_TAGS = ("5ca1ab1e-0000-4000-8000-00000000000a", "5ca1ab1e-0000-4000-8000-00000000000b")
TWO_HOST_SHARED = TWO_HOST_TAGS[1]
TWO_HOST_NAME = "shared-pool"


@dataclasses.dataclass
class TwoHosts:
    """Host A sees the shared NVDIMM as its only one; host B has a local
    label-less NVDIMM first, so the same allocation gets another device
    name there (dax1.1 instead of dax0.1): only the tag is stable.

    The shared NVDIMM sits in slot 0 on both hosts (the labels' interleave-set
    cookie depends on the slot, see vmkit.NvdimmSpec); host B's local one is
    listed first but in slot 1, which is enough to renumber the regions."""

    shared: vmkit.NvdimmSpec
    local_b: vmkit.NvdimmSpec

    @classmethod
    def in_cache(cls, cache_dir: Path, prefix: str = "twohost") -> TwoHosts:
        img = cache_dir / "images"
        return cls(vmkit.NvdimmSpec(img / f"{prefix}-shared.img", "1G"),
                   vmkit.NvdimmSpec(img / f"{prefix}-b-local.img", "1G", label_size=0))

    def prepare(self, assets: vmkit.Assets, log: vmkit.Log = vmkit._default_log):
        """Tagged namespaces on the shared file (a boot the first time only)."""
        return vmkit.prepare_nvdimm(self.shared, TWO_HOST_TAGS, "256M", assets=assets, log=log)

    @staticmethod
    def config() -> str:
        return conf_text({TWO_HOST_SHARED: {"name": TWO_HOST_NAME, "shareable": "yes"}},
                         "both hosts: the shared allocation, by its tag")

    @staticmethod
    def scenario(rounds: int, handshake_timeout_s: int = 60, stop_daemon: bool = True) -> str:
        """Each host: mount, show, resolve, ping-pong through data, and (with
        ``stop_daemon``) unmount by SIGTERM. The demo leaves the daemon
        running when the guest powers off: it shows the sharing, while the
        unmount is what the tests check."""
        t = TWO_HOST_SHARED
        return heredoc("/etc/tagmem/tagmem.conf", TwoHosts.config()) + f"""
echo "TM-EVENT: host $TM_HOST booted uptime=$(tm_now)"
tm_start
tm_show {t}
# The tag, not the device name, is what both hosts agree on.
[ "$(tagmem resolve {t})" = "$(vmkit_dax_for_tag {t})" ]
[ "$(readlink $TM_MNT/{t}/dev)" = "$(vmkit_dax_for_tag {t})" ]
echo "TM-EVENT: pingpong start uptime=$(tm_now)"
daxmap pingpong $TM_MNT/{t}/data "$TM_ROLE" {rounds} {handshake_timeout_s}
echo "TM-EVENT: pingpong done uptime=$(tm_now)"
""" + ("tm_stop\n" if stop_daemon else "TM_PID=\n")

    def guest_configs(self, initrd: Path, *, assets: vmkit.Assets, timeout_s: float,
                      log_dir: Path | None = None, echo: bool | None = None,
                      log: vmkit.Log = vmkit._default_log) -> list[dict]:
        """vmkit.start keyword sets for host A (ping) and host B (pong)."""
        out = []
        shared0 = dataclasses.replace(self.shared, slot=0)
        local1 = dataclasses.replace(self.local_b, slot=1)
        for host, role, nvs in (("A", "ping", [shared0]), ("B", "pong", [local1, shared0])):
            out.append(dict(initrd=initrd, nvdimms=nvs, smp=1, timeout_s=timeout_s,
                            name=f"host-{host}", env={"TM_HOST": host, "TM_ROLE": role},
                            log_path=(log_dir / f"host-{host}.log") if log_dir else None,
                            echo=echo, assets=assets, log=log))
        return out


def start_all(configs: Sequence[Mapping]) -> list[vmkit.Guest]:
    return [vmkit.start(**cfg) for cfg in configs]


def wait_all(guests: Sequence[vmkit.Guest], grace_s: float = 15.0) -> list[vmkit.BootResult]:
    """Wait for every guest. Once one has failed, the others get ``grace_s``
    more seconds and are then killed: a peer waiting for a dead partner
    would otherwise sit out its whole handshake timeout."""
    deadline: float | None = None
    try:
        while True:
            running = [g for g in guests if g.proc.poll() is None]
            if not running:
                break
            for g in running:
                if time.monotonic() - g.t0 > g.timeout_s:
                    g.wait()  # kills it and records the timeout
            if deadline is None:
                if any(g.proc.poll() is not None and not g.wait().passed for g in guests):
                    deadline = time.monotonic() + grace_s
            elif time.monotonic() > deadline:
                for g in running:
                    g.kill()
            time.sleep(0.2)
        return [g.wait() for g in guests]
    finally:
        for g in guests:
            g.kill()


# --------------------------------------------------------------------------
# the VM hand-off (issue 12): a host tag given to guests as their own NUMA
# node, shared by test_vm_handoff.py and demo.py
# --------------------------------------------------------------------------

HANDOFF_TAG = "7a9e0000-0000-4000-8000-00000000c0de"
HANDOFF_NAME = "vm-shared"
HANDOFF_SIZE = 64 * vmkit.MiB
HANDOFF_RAM = 512 * vmkit.MiB  # each guest's own RAM, node 0
#: What the host's metadata says of the tag's memory (HMAT access0).
HANDOFF_PERF = {"read_latency_ns": 180, "write_latency_ns": 210,
                "read_bandwidth_mbps": 14000, "write_bandwidth_mbps": 9000}
HANDOFF_ITEM = "/sys/firmware/qemu_fw_cfg/by_name/opt/org.tagmem/tags/raw"


def with_backing_file(qemu_args: Sequence[str], tag: str, path: os.PathLike | str,
                      mount_point: str = "/run/tagmem") -> list[str]:
    """The tests' one switch (issue 12): this CI host has no real devdax, so
    the tag's memory backend maps a plain file instead of
    <mount point>/<tag>/data. Everything else stays as generated."""
    want = f"mem-path={mount_point}/{tag}/data"
    out, hits = [], 0
    for a in qemu_args:
        if a.startswith("memory-backend-file,") and want + "," in a + ",":
            a = a.replace(want, "mem-path=" + str(path).replace(",", ",,"))
            hits += 1
        out.append(a)
    if hits != 1:
        raise vmkit.VmError(f"{want} appears {hits} times in the generated arguments")
    return out


def handoff_host_file(path: Path, seed: int = 0x7a9e) -> str:
    """The host's "tag": HANDOFF_SIZE bytes of seeded noise (not zeros, so
    that anything written into it by the hand-off shows). Its sha256."""
    import random
    data = random.Random(seed).randbytes(HANDOFF_SIZE)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def read_at(path: Path, off: int, n: int) -> bytes:
    """n bytes of the host's file at off (what a guest wrote there)."""
    with open(path, "rb") as fh:
        fh.seek(off)
        return fh.read(n)


def hash_outside(path: Path, holes: list[tuple[int, int]]) -> str:
    """sha256 of the file with the byte ranges in ``holes`` (offset, length)
    left out: compared before and after, it shows that nothing but the
    guests' own writes changed the tag's memory."""
    data = path.read_bytes()
    h = hashlib.sha256()
    pos = 0
    for off, n in sorted(holes):
        h.update(data[pos:off])
        pos = off + n
    h.update(data[pos:])
    return h.hexdigest()


def check_handoff_guest(res: vmkit.BootResult, tag: str) -> dict:
    """What every hand-off guest must show of the handed-over tag ``tag``:
    tagmem's metadata (equal to `tagmem show` without physical ranges) with
    the host's size, name, shareable flag and performance data from the
    fw_cfg item, the range at 4 GiB, and the size/shareable files. Returns
    the tag's first device in metadata, for the caller's own checks."""
    meta = section_json(res, f"metadata-{tag}")
    shown = section_json(res, f"show-{tag}")
    assert meta == without_ranges(shown)
    assert (meta["tag"], meta["state"], meta["source"]) == (tag, "ready", "handoff")
    assert meta["size"] == HANDOFF_SIZE
    assert (meta["name"], meta["shareable"], meta["shareable_from"]) == (
        HANDOFF_NAME, True, "handoff")
    dev = meta["devices"][0]
    assert dev["performance"] == HANDOFF_PERF
    assert dev["performance_source"] == {k: "host via fw_cfg" for k in HANDOFF_PERF}
    assert shown["devices"][0]["ranges"] == [
        {"start": 4 << 30, "end": (4 << 30) + HANDOFF_SIZE - 1, "size": HANDOFF_SIZE}]
    assert section(res, f"size-{tag}").strip() == str(HANDOFF_SIZE)
    assert section(res, f"shareable-{tag}").strip() == "1"
    events_seen = events(res)
    assert any(e.startswith("read the host's pattern") for e in events_seen), events_seen
    return dev


def handoff_scenario(tag: str, steps: str) -> str:
    """A hand-off guest: load the modules QEMU's memory needs (qemu_fw_cfg
    shows the item, dax_hmem makes the soft-reserved range a dax device),
    show that the device starts disabled, start tagmemfs (which enables it
    because the item names it), show the tag, then ``steps`` (shell, with
    $D the tag's data), then stop tagmemfs.

    With TM_LATE_FWCFG=1 in the guest's environment qemu_fw_cfg is loaded
    only after tagmemfs has mounted (a late `modprobe`): the driver's bind
    is all tagmemfs gets, no dax event comes with the item. With
    TM_LATE_HMEM=1 dax_hmem is loaded only after tagmemfs has mounted (and
    after qemu_fw_cfg's bind was handled, if that is late too): the
    disabled device's add event is all tagmemfs gets, no bind follows until
    it enables it. Either way the tag must appear with no SIGHUP; the
    TM-EVENT lines "modprobe ..." and "tag appeared" time it."""
    return f"""
late_fwcfg=${{TM_LATE_FWCFG:-0}}
late_hmem=${{TM_LATE_HMEM:-0}}
tm_dax_drivers() {{
    for d in /sys/bus/dax/devices/*; do
        drv=$(readlink "$d/driver" || true)
        echo "${{d##*/}} driver=${{drv##*/}} target_node=$(cat $d/target_node) size=$(cat $d/size)"
    done
}}
if [ "$late_fwcfg" != 1 ]; then
    modprobe qemu_fw_cfg
    tm_section handoff-item cat {HANDOFF_ITEM}
fi
if [ "$late_hmem" != 1 ]; then
    modprobe dax_hmem
    for i in $(seq 100); do [ -e /sys/bus/dax/devices/dax0.0 ] && break; sleep 0.1; done
fi
tm_section dax-before tm_dax_drivers
tm_start
if [ "$late_fwcfg" = 1 ]; then
    echo "TM-EVENT: modprobe qemu_fw_cfg uptime=$(tm_now)"
    modprobe qemu_fw_cfg
    tm_section handoff-item cat {HANDOFF_ITEM}
fi
if [ "$late_hmem" = 1 ]; then
    if [ "$late_fwcfg" = 1 ]; then
        # The item read at the bind first, then the device.
        for i in $(seq 300); do grep -q 'rescan (fw_cfg bound)' "$TM_LOG" && break; sleep 0.1; done
    fi
    echo "TM-EVENT: modprobe dax_hmem uptime=$(tm_now)"
    modprobe dax_hmem
fi
if [ "$late_fwcfg" = 1 ] || [ "$late_hmem" = 1 ]; then
    for i in $(seq 300); do [ -e "$TM_MNT/{tag}/data" ] && break; sleep 0.1; done
    if [ -e "$TM_MNT/{tag}/data" ]; then
        echo "TM-EVENT: tag appeared uptime=$(tm_now)"
    else
        echo "TM-EVENT: no tag 30 s after the module loads uptime=$(tm_now)"
    fi
fi
echo "TM-EVENT: host $TM_HOST booted uptime=$(tm_now)"
tm_show {tag}
tm_section dax-after tm_dax_drivers
D=$TM_MNT/{tag}/data
# Until PATTERN (SEED LEN OFF) is at OFF of data (up to 120 s).
tm_wait_pattern() {{
    tm_i=0
    until daxmap verify "$D" "$1" "$2" "$3" >/tmp/wait.out 2>&1; do
        tm_i=$((tm_i + 1))
        if [ $tm_i -gt 600 ]; then cat /tmp/wait.out; return 1; fi
        sleep 0.2
    done
    cat /tmp/wait.out
}}
{steps}
tm_stop
"""


def vm_args_from_synthetic_host(build: Path, workdir: Path, ram: int = HANDOFF_RAM,
                                cpus: int = 1, libvirt: bool = False,
                                kernel_cmdline: bool = False) -> dict | str:
    """`tagmem vm-args --format json` for HANDOFF_TAG, run for real: against a
    synthetic host (tests/synthetic/hostgen.py, mounted over /sys and /dev in
    a private mount namespace; needs root) holding the tag as a 64 MiB hmem
    device on NUMA node 1 with HMAT data HANDOFF_PERF, named and made
    shareable by that host's tagmem.conf. Its `qemu` arguments name
    /run/tagmem/<tag>/data as the memory backend (with_backing_file swaps it
    for a file) and `kernel_cmdline` the guest's memmap=. With ``libvirt``:
    the text of `tagmem vm-args --libvirt` (the domain XML fragment) instead;
    with ``kernel_cmdline``: the line `tagmem vm-args --kernel-cmdline`
    prints (what a guest administrator is given, docs/vm.md)."""
    import sys
    sys.path.insert(0, str(REPO / "tests" / "synthetic"))
    import hostgen as hg
    base = 0x1040000000
    h = hg.Host()
    h.node(1, read_latency=HANDOFF_PERF["read_latency_ns"],
           write_latency=HANDOFF_PERF["write_latency_ns"],
           read_bandwidth=HANDOFF_PERF["read_bandwidth_mbps"],
           write_bandwidth=HANDOFF_PERF["write_bandwidth_mbps"])
    h.hmem(region_id=0, base=base, size=HANDOFF_SIZE, target_node=1)
    root = workdir / "vm-args-host"
    h.write(root)
    conf = workdir / "vm-args-host.conf"
    conf.write_text(conf_text({HANDOFF_TAG: {
        "name": HANDOFF_NAME, "shareable": "yes",
        "match-range": f"{base:#x}-{base + HANDOFF_SIZE - 1:#x}"}}, "the host's tag"))
    fmt = ["--libvirt"] if libvirt else ["--kernel-cmdline"] if kernel_cmdline else \
        ["--format", "json"]
    r = hg.run_in_host(root, [str(build / "cli" / "tagmem"), "--config", str(conf), "vm-args",
                              *fmt, "--memory", f"{ram // vmkit.MiB}M",
                              "--cpus", str(cpus), HANDOFF_TAG])
    if r.returncode != 0:
        raise vmkit.VmError(f"tagmem vm-args exited {r.returncode}: {r.stderr}")
    return r.stdout if libvirt or kernel_cmdline else json.loads(r.stdout)
