# SPDX-License-Identifier: Apache-2.0
"""Fixtures for the real-devdax QEMU tests.

Why session fixtures: fetching the kernel and compiling the guest tools is
done once per pytest run, and every test reuses them. Timings that the tests
record are printed at the end of the run, because boot and round-trip times
are what tells a reader whether this suite will fit in CI.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

import tagmemvm
import vmkit

HERE = Path(__file__).resolve().parent

#: name -> seconds (or any short value) shown in the terminal summary.
TIMINGS: dict[str, str] = {}
_SKIPS: list[str] = []


def skip_loudly(reason: str):
    """Skip with a message nobody can miss: QEMU unusable is the only excuse."""
    line = f"SKIPPED: real-devdax QEMU tests: {reason}"
    _SKIPS.append(line)
    print(line, file=sys.__stderr__, flush=True)
    pytest.skip(line)


def pytest_terminal_summary(terminalreporter):
    tr = terminalreporter
    for line in _SKIPS:
        tr.write_line("=" * 20 + " " + line + " " + "=" * 20, red=True, bold=True)
    if TIMINGS:
        tr.section("vmkit timings")
        for key, value in TIMINGS.items():
            tr.write_line(f"{key:<32} {value}")


@pytest.fixture(scope="session")
def vm_timings() -> dict[str, str]:
    return TIMINGS


@pytest.fixture(scope="session")
def vm_assets() -> vmkit.Assets:
    """Host tools, a working QEMU and the guest kernel, or a loud skip."""
    try:
        vmkit.ensure_host_tools()
        TIMINGS["qemu"] = vmkit.probe_qemu()
    except vmkit.QemuUnavailable as exc:
        skip_loudly(str(exc))
    t0 = time.monotonic()
    assets = vmkit.ensure_assets()
    TIMINGS["kernel"] = f"{assets.kver} ({assets.flavor}: TAGMEM_QEMU_KERNEL)"
    TIMINGS["assets (this run)"] = (f"{time.monotonic() - t0:.1f}s "
                                    + ("downloaded" if assets.downloaded else "cache hit"))
    if assets.downloaded:
        TIMINGS["kernel download"] = f"{assets.timings['download_s']:.1f}s"
        TIMINGS["kernel unpack"] = f"{assets.timings['unpack_s']:.1f}s"
    return assets


@pytest.fixture(scope="session")
def guest_tools() -> dict[str, Path]:
    """daxmap and tagmem-runas: from $TAGMEM_BUILD_DIR if CMake built them,
    else compiled with g++ (static when possible) into the cache directory,
    keyed by the source's content."""
    build = os.environ.get("TAGMEM_BUILD_DIR")
    t0 = time.monotonic()
    try:
        tools = tagmemvm.guest_tools(Path(build) if build else None, vmkit.default_cache_dir())
    except vmkit.VmError as exc:
        pytest.fail(str(exc))
    TIMINGS["guest tools"] = f"{time.monotonic() - t0:.1f}s"
    return tools


@pytest.fixture(scope="session")
def product(vm_assets) -> dict[str, Path]:
    """tagmem and tagmemfs from the CMake build dir ($TAGMEM_BUILD_DIR, else
    <repo>/build), debug info stripped. Missing binaries fail the tests: the
    product not being built is not a reason to skip."""
    try:
        return tagmemvm.product_binaries(tagmemvm.build_dir(), vm_assets.cache_dir)
    except tagmemvm.ProductMissing as exc:
        pytest.fail(str(exc))
