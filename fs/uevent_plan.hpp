// SPDX-License-Identifier: Apache-2.0
// What the daemon makes of a batch of device events: which dax devices to
// read again, and whether to scan everything again. libudev parses the
// netlink messages; this is tagmem's own reading of them, kept apart from
// the daemon and from libudev so that it can be fuzzed with arbitrary
// actions and names (fuzz/fuzz_uevent_plan.cpp) and unit-tested
// (tests/unit/uevent_plan_test.cpp).
#pragma once

#include "uevents.hpp"

#include <set>
#include <string>
#include <vector>

namespace tagmem {

// The platform driver of QEMU's fw_cfg device (module qemu_fw_cfg), whose
// probe makes /sys/firmware/qemu_fw_cfg/by_name/ and so the VM hand-off
// item (core/handoff.hpp). Its bind event is the item's arrival: the kernel
// sends it once the probe has made every item's file.
inline constexpr const char* kFwCfgDriver = "fw_cfg";

struct UeventPlan {
    std::set<std::string> devices; // dax devices to read again, by sysname
    // dax devices added in this batch, read only at their bind (above) unless
    // nothing will bind them: a VM guest's handed-over device starts without
    // a driver until tagmem enables it (HostState::handed_over).
    std::set<std::string> added;
    // Syspaths of nd/cxl objects: the dax devices below each may have changed
    // (which ones those are, only the daemon's state knows).
    std::set<std::string> parents;
    // The fw_cfg driver bound (a `modprobe qemu_fw_cfg` after tagmemfs
    // started): the hand-off item may have appeared, and with it tags for
    // devices already read. Only a full scan reads the item: one for the
    // batch, however many binds it holds.
    bool rescan = false;
};

// awaiting_bind: dax devices added and not yet bound, carried from one batch
// to the next; updated here. Events of subsystems other than dax, nd, cxl
// and platform, and platform events other than fw_cfg's bind, change
// nothing.
UeventPlan plan_uevents(const std::vector<Uevent>& events, std::set<std::string>& awaiting_bind);

} // namespace tagmem
