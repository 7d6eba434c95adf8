// SPDX-License-Identifier: Apache-2.0
// What tagmemfs keeps of root's power once it serves (docs/security.md): it
// parses input from every local user for its whole life, with only the
// capabilities its running work needs.
#pragma once

#include "result.hpp"

#include <array>
#include <string>

namespace tagmem {

struct KeptCapability {
    int number; // linux/capability.h
    const char* name;
};

// What the daemon does after mounting, and the one capability each needs:
//   CAP_SYS_ADMIN  umount2 of the FUSE mount (libfuse, as root) and of the
//                  nodes tmpfs when it stops;
//   CAP_MKNOD      mknodat of a tag's device node on that tmpfs;
//   CAP_CHOWN      fchownat of a node to the owner and group tagmem.conf names;
//   CAP_FOWNER     fchmodat of a node that then belongs to that other user.
// The same four as the unit's CapabilityBoundingSet (packaging/).
extern const std::array<KeptCapability, 4> kKeptCapabilities;

// Drops every other capability from the effective, permitted, inheritable,
// ambient and bounding sets, and sets no_new_privs. Capabilities are a
// thread's: call it before the process makes any thread it keeps (the
// threads made afterwards inherit the sets). Dropping from the bounding set
// needs CAP_SETPCAP; it is asked for only where there is something to drop
// (under the unit, there is not).
Status drop_capabilities();

// The capability sets of the calling thread as /proc/<pid>/status shows
// them, for the log.
std::string capability_summary();

} // namespace tagmem
