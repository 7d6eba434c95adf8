// SPDX-License-Identifier: Apache-2.0
// What the daemon makes of a batch of device events: which dax devices to
// read again. libudev parses the netlink messages; this is tagmem's own
// reading of them, kept apart from the daemon and from libudev so that it
// can be fuzzed with arbitrary actions and names (fuzz/fuzz_uevent_plan.cpp).
#pragma once

#include "uevents.hpp"

#include <set>
#include <string>
#include <vector>

namespace tagmem {

struct UeventPlan {
    std::set<std::string> devices; // dax devices to read again, by sysname
    // dax devices added in this batch, read only at their bind (above) unless
    // nothing will bind them: a VM guest's handed-over device starts without
    // a driver until tagmem enables it (HostState::handed_over).
    std::set<std::string> added;
    // Syspaths of nd/cxl objects: the dax devices below each may have changed
    // (which ones those are, only the daemon's state knows).
    std::set<std::string> parents;
};

// awaiting_bind: dax devices added and not yet bound, carried from one batch
// to the next; updated here.
UeventPlan plan_uevents(const std::vector<Uevent>& events, std::set<std::string>& awaiting_bind);

} // namespace tagmem
