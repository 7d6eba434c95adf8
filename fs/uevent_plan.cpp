// SPDX-License-Identifier: Apache-2.0
#include "uevent_plan.hpp"

namespace tagmem {

UeventPlan plan_uevents(const std::vector<Uevent>& events, std::set<std::string>& awaiting_bind) {
    UeventPlan plan;
    for (const auto& ev : events) {
        if (ev.subsystem == "dax") {
            // The driver link appears before device_dax's probe has made the
            // character device usable; the probe's success is the "bind"
            // event. A device just added is therefore read at its bind, not
            // before: otherwise `tagmem wait` could return while opening the
            // node still fails with ENXIO (seen in the QEMU guests).
            if (ev.action == "add") {
                awaiting_bind.insert(ev.sysname);
                plan.added.insert(ev.sysname);
                continue;
            }
            if (ev.action == "bind" || ev.action == "remove" || ev.action == "unbind")
                awaiting_bind.erase(ev.sysname);
            else if (awaiting_bind.contains(ev.sysname))
                continue;
            plan.devices.insert(ev.sysname);
        } else if (ev.subsystem == "nd" || ev.subsystem == "cxl") {
            // The dax devices below that object may have changed.
            plan.parents.insert(ev.syspath);
        } else if (ev.subsystem == "platform" && ev.action == "bind" && ev.driver == kFwCfgDriver) {
            // Its unbind (and the module's removal) is not followed: the
            // item cannot change while the guest runs, so the one read
            // stands (HostState::read_handoff_item, docs/vm.md).
            plan.rescan = true;
        }
    }
    return plan;
}

} // namespace tagmem
