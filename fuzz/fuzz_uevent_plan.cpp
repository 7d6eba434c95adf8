// SPDX-License-Identifier: Apache-2.0
// tagmem's reading of device events (fs/uevent_plan): libudev parses the
// netlink messages and is not fuzzed here; what is fuzzed is the decision
// taken on arbitrary action, subsystem, sysname, syspath and driver
// strings, over several batches (the devices awaiting their bind carry
// over).
//
// Input: lines "action<TAB>subsystem<TAB>sysname<TAB>syspath<TAB>driver"
// (the driver may be left out); a line "--" ends a batch.
#include "fuzz_check.hpp"
#include "uevent_plan.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

using tagmem::Uevent;

namespace {

Uevent parse_line(std::string_view line) {
    std::string fields[5];
    for (auto& f : fields) {
        auto tab = line.find('\t');
        f = std::string(line.substr(0, tab));
        line.remove_prefix(tab == std::string_view::npos ? line.size() : tab + 1);
    }
    return {fields[0], fields[1], fields[2], fields[3], fields[4]};
}

void check_batch(const std::vector<Uevent>& batch, const tagmem::UeventPlan& plan,
                 const std::set<std::string>& awaiting, const std::set<std::string>& ever_added) {
    for (const auto& name : plan.devices) {
        // Only dax devices that were named by an event other than their add.
        bool named = false;
        for (const auto& ev : batch)
            named = named || (ev.subsystem == "dax" && ev.sysname == name && ev.action != "add");
        FUZZ_CHECK(named);
    }
    for (const auto& path : plan.parents) {
        bool named = false;
        for (const auto& ev : batch)
            named =
                named || ((ev.subsystem == "nd" || ev.subsystem == "cxl") && ev.syspath == path);
        FUZZ_CHECK(named);
    }
    // A full scan exactly when the fw_cfg driver bound in this batch.
    bool fw_cfg_bound = false;
    for (const auto& ev : batch)
        fw_cfg_bound = fw_cfg_bound || (ev.subsystem == "platform" && ev.action == "bind" &&
                                        ev.driver == tagmem::kFwCfgDriver);
    FUZZ_CHECK(plan.rescan == fw_cfg_bound);
    for (const auto& name : awaiting)
        FUZZ_CHECK(ever_added.contains(name));
    // A device whose last event in the batch was its add waits for its bind.
    for (const auto& ev : batch)
        if (ev.subsystem == "dax" && ev.action == "add") {
            const Uevent* last = nullptr;
            for (const auto& e : batch)
                if (e.subsystem == "dax" && e.sysname == ev.sysname)
                    last = &e;
            if (last->action == "add")
                FUZZ_CHECK(awaiting.contains(ev.sysname));
        }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    std::set<std::string> awaiting;
    std::set<std::string> ever_added;
    std::vector<Uevent> batch;
    auto run_batch = [&] {
        auto plan = tagmem::plan_uevents(batch, awaiting);
        for (const auto& ev : batch)
            if (ev.subsystem == "dax" && ev.action == "add")
                ever_added.insert(ev.sysname);
        check_batch(batch, plan, awaiting, ever_added);
        batch.clear();
    };
    while (!text.empty()) {
        auto nl = text.find('\n');
        auto line = text.substr(0, nl);
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        if (line == "--")
            run_batch();
        else
            batch.push_back(parse_line(line));
    }
    run_batch();
    return 0;
}
