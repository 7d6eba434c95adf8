#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs every build and test dependency of tagmem from Debian 12 packages.
# Idempotent: packages already present are skipped, so a second run is quick.
set -euo pipefail

build_pkgs=(
  build-essential cmake pkg-config git
  libfuse3-dev fuse3 libdaxctl-dev libndctl-dev libudev-dev
  libfmt-dev libgtest-dev libgmock-dev nlohmann-json3-dev libinih-dev libcli11-dev
  libsystemd-dev libtraceevent-dev
)
# Used by the tests: jq to read JSON in shell tests, util-linux for unshare,
# python3 for the FUSE/fixture tests, clang-format for the style check, strace
# to order and delay the daemon's system calls (test_faults.py).
test_pkgs=(util-linux procps jq python3 python3-pytest clang-format kmod strace)
# Containers (tests/integration/test_containers.py): Debian's podman with
# runc (crun fails on hybrid cgroups), a static busybox and libc for the test
# image, and the CDI schema with a validator for the spec tagmemfs writes.
test_pkgs+=(podman runc busybox-static libc6-dev python3-jsonschema
  golang-github-container-orchestrated-devices-container-device-interface-dev)
# tagmem vm-args --libvirt (tests/integration/test_vm.py): virt-xml-validate
# checks the generated fragment inside a whole domain against libvirt's schema.
test_pkgs+=(libvirt-clients)
# The sanitizer and fuzzing pass (scripts/test-sanitizers.sh): clang with
# libFuzzer and its sanitizer runtimes, llvm-symbolizer for readable reports.
test_pkgs+=(clang libclang-rt-14-dev llvm-14)
# The emulated real-devdax hosts (tests/qemu).
qemu_pkgs=(qemu-system-x86 busybox-static cpio ndctl daxctl xz-utils zstd)
# The Debian package booted in a Debian 12 guest (tests/qemu/test_booted_system.py):
# building the .deb, checking it, making the guest's root filesystem and disk.
qemu_pkgs+=(debhelper dpkg-dev lintian mmdebstrap e2fsprogs)
# A Debian 12 image that boots its own kernel through GRUB
# (tests/qemu/test_grub_guest.py): sfdisk partitions the disk image file.
qemu_pkgs+=(fdisk)
# A guest started by a real libvirtd from `tagmem vm-args --libvirt`
# (tests/qemu/test_libvirt_handoff.py): the daemon and its QEMU driver; the
# test runs its own session-mode libvirtd, so libvirt-daemon-system (system
# services, the libvirt-qemu user) is not needed. virsh: libvirt-clients.
qemu_pkgs+=(libvirt-daemon libvirt-daemon-driver-qemu)

want=("${build_pkgs[@]}" "${test_pkgs[@]}")
if [[ "${TAGMEM_SKIP_QEMU_DEPS:-0}" != 1 ]]; then
  want+=("${qemu_pkgs[@]}")
fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing packages (${missing[*]}); run as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "install-deps: all ${#want[@]} packages present"
