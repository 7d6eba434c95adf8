// SPDX-License-Identifier: Apache-2.0
// Exit codes of tagmem(1); documented in man/tagmem.1 (EXIT STATUS) and kept
// true by tests. Scripts branch on them, so they never change meaning.
#pragma once

namespace tagmem::cli {

enum ExitCode : int {
    kExitOk = 0,
    kExitError = 1,       // the scan itself failed (e.g. libdaxctl cannot start)
    kExitUsage = 2,       // bad argument or option
    kExitUnknownTag = 3,  // no device carries the tag
    kExitConflict = 4,    // several devices claim the tag
    kExitTimeout = 6,     // tagmem wait gave up
    kExitNotUsable = 5,   // the tag exists but is not mappable (system-ram, disabled)
    kExitNoLayout = 7,    // vm-args: the tags do not fit a guest (sizes, address space)
    kExitUnsupported = 8, // vm-args --hotplug: the mechanism cannot (docs/vm.md)
    // tagmem online / offline (docs/online.md); 10 and up, apart from the
    // codes every command shares.
    kExitNotRoot = 10,       // only root may change what memory is
    kExitNotAllowed = 11,    // tagmem.conf does not opt the tag in
    kExitInUse = 12,         // a process has the device open or mapped
    kExitKernelRefused = 13, // the kernel could not (offline: pages that cannot move)
    kExitConfigInvalid = 14, // tagmem.conf has errors: nothing is decided on it
    kExitPidNamespace = 15,  // online from a PID namespace whose /proc hides processes
    // tagmem claim (docs/dcd.md): 13 when the kernel refuses, and
    kExitNotClaimable = 16, // the tag's extents are inconsistent (regions, overlap, alignment)
    // tagmem vm-attach / vm-detach (docs/vm.md): 3, 4 and 5 as everywhere, and
    kExitNoQmp = 17,         // QEMU cannot be asked (no socket, not QMP) or answered an error
    kExitNotDeclared = 18,   // the guest has no CXL device for the tag (not given at boot)
    kExitDetachRefused = 19, // the guest kernel keeps the capacity (a dax device holds it)
    kExitNotAttached = 20,   // vm-detach: the guest has no capacity of the tag
};

} // namespace tagmem::cli
