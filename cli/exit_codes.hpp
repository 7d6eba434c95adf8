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
};

} // namespace tagmem::cli
