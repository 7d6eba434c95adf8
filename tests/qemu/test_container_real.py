# SPDX-License-Identifier: Apache-2.0
"""A tag handed to a container on a real devdax device, in a QEMU guest
(issue 11): a containerised program maps the tag's data and writes a
pattern, and the host finds it in the NVDIMM's backing file at the device's
offset.

The guests are busybox initramfs systems where podman cannot run, so the
container is made by tagmem-cdi-run (tools/cdi_run.cpp) from the CDI spec
tagmemfs wrote to /var/run/cdi in the guest, as runc makes one from the OCI
spec podman derives from it: new mount, PID, IPC, UTS and network
namespaces, a tmpfs root entered with pivot_root, the spec's bind mounts
and device nodes (owner and mode), its environment, and a cgroup v1 device
cgroup with runc's default rules plus the spec's. Real podman and runc are
exercised on synthetic hosts (tests/integration/test_containers.py).
"""

from __future__ import annotations

import random
import re

import tagmemvm
import vmkit
from tagmemvm import section, section_stderr

MiB = vmkit.MiB
TAGS = ("a1a1a1a1-0011-4000-8000-0000000000a1", "b2b2b2b2-0011-4000-8000-0000000000b2")
USER_UID = 1000  # the owner of tag A in the guest's tagmem.conf
LEN = 4 * MiB
GUEST_TIMEOUT_S = 180


def test_a_containerised_program_maps_its_tag(vm_assets, product, guest_tools, vm_timings,
                                              tmp_path):
    nv = vmkit.NvdimmSpec(vm_assets.cache_dir / "images" / "s11-cdi.img", "1G")
    vmkit.prepare_nvdimm(nv, TAGS, "256M", assets=vm_assets)
    ta, tb = TAGS
    seed = random.getrandbits(62) | 1
    conf = tagmemvm.conf_text({ta: {"owner": str(USER_UID), "mode": "0600"}}, "scenario 11")
    # The container: the spec's device, busybox and daxmap bound read-only.
    run = ("tagmem-cdi-run /var/run/cdi {name} --user {user} "
           "--bind /bin/busybox:/bin/busybox --bind /usr/local/bin/daxmap:/bin/daxmap "
           "-- /bin/busybox sh -c")
    scenario = tagmemvm.heredoc("$TM_CONF", conf) + f"""
A=$(vmkit_dax_for_tag {ta})
echo "TM-DEVS A=$A resource=$(cat /sys/bus/dax/devices/${{A##*/}}/resource)"
tm_start
tm_section regions sh -c 'for r in /sys/bus/nd/devices/region*; do
    echo "${{r##*/}} $(cat $r/resource) $(cat $r/size)"; done'
tm_section spec ls /var/run/cdi
B_NUM=$(stat -L -c '%t %T' $TM_MNT/{tb}/data)
B_MAJ=$((0x${{B_NUM% *}})); B_MIN=$((0x${{B_NUM#* }}))

# The tag's owner, in the container, maps data and writes the pattern.
tm_section inside {run.format(name=ta, user=f"{USER_UID}:{USER_UID}")} \\
    'echo $(busybox ls /run/tagmem); echo $(busybox ls /run/tagmem/$TAGMEM_TAG); busybox id -u;
     echo "pid $$"; daxmap write $TAGMEM_DATA {seed:#x} {LEN}'
# Another uid: the node's owner and mode refuse it.
tm_section other-uid {run.format(name=ta, user="1001:1001")} \\
    'daxmap write $TAGMEM_DATA 1 2M' || true
# Root in the container, tag B's device made by hand: the cgroup refuses it.
tm_section other-tag {run.format(name=ta, user="0:0")} \\
    "busybox mknod /tmp/b c $B_MAJ $B_MIN && daxmap write /tmp/b 1 2M" || true
tm_section not-requested {run.format(name=ta, user="0:0")} \\
    'busybox ls /run/tagmem/{tb}' || true
tm_section unresolvable {run.format(name="no-such-tag", user="0:0")} 'true' || true
tm_stop
"""
    initrd = tagmemvm.build_initrd(tmp_path / "s11.cpio", scenario, assets=vm_assets,
                                   product=product, tools=guest_tools)
    res = vmkit.boot(initrd, [nv], timeout_s=GUEST_TIMEOUT_S, name="s11",
                     log_path=tmp_path / "s11.log", assets=vm_assets)
    vm_timings["s11 container"] = f"guest total {res.elapsed_s:.1f}s"
    assert not res.oops, res.oops
    res.check()

    m = re.search(r"^TM-DEVS A=(\S+) resource=0x([0-9a-f]+)$", res.console, re.M)
    assert m, res.tail()
    start = int(m.group(2), 16)
    # One spec file per usable tag, nothing else (no temporary file left).
    assert section(res, "spec").split() == [f"tagmem-{t}.json" for t in sorted(TAGS)]

    inside = section(res, "inside").splitlines()
    assert inside[0] == ta  # only A under /run/tagmem
    assert inside[1].split() == ["data", "dev", "metadata", "shareable", "size"]
    assert inside[2:4] == [str(USER_UID), "pid 1"]
    assert "VMKIT-END inside rc=0" in res.console

    # The pattern the container wrote is in the host's backing file at the
    # device's offset in its region.
    regions = {ln.split()[0]: int(ln.split()[1], 16) for ln in section(res, "regions").splitlines()}
    [base] = regions.values()
    assert vmkit.find_pattern(nv.path, seed) == start - base
    with open(nv.path, "rb") as fh:
        fh.seek(start - base + LEN - MiB)
        assert fh.read(MiB) == vmkit.daxmap_pattern(seed, MiB, (LEN - MiB) // 8)

    # open() of data as another uid: EACCES; of B's node, made by hand (the
    # mknod itself is allowed, as under runc): EPERM from the device cgroup.
    assert section_stderr(res, "other-uid") == f"daxmap: /run/tagmem/{ta}/data: Permission denied"
    assert section_stderr(res, "other-tag") == "daxmap: /tmp/b: Operation not permitted"
    assert "No such file" in section_stderr(res, "not-requested")
    assert "unresolvable CDI device tagmem.io/tag/no-such-tag" in section_stderr(
        res, "unresolvable")
    assert "TM-EVENT: tagmemfs exited rc=0" in res.console
