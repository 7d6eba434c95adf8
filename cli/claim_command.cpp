// SPDX-License-Identifier: Apache-2.0
// Runs here, as root, for the reason tagmem online does: the daemon's socket
// is open to every user and stays read-only. tagmemfs learns of the new
// device from its bind uevent (or its next scan) like of any other.
#include "claim_command.hpp"

#include "exit_codes.hpp"

#include "claim.hpp"
#include "discovery.hpp"
#include "host_os.hpp"
#include "online.hpp"

#include <fmt/format.h>

#include <unistd.h>

namespace tagmem::cli {
namespace {

int fail(int code, const std::string& message) {
    fmt::print(stderr, "tagmem: {}\n", message);
    return code;
}

} // namespace

int cmd_claim(const std::string& tag_text, const QueryOptions& opt) {
    auto tag = Uuid::parse(tag_text);
    if (!tag)
        return fail(kExitUsage, tag.error().message);
    if (::geteuid() != 0)
        return fail(kExitNotRoot, "tagmem claim gives capacity to a dax device: run it as root");
    HostOs& os = real_host_os();
    const std::string path = opt.config_path.value_or(kDefaultConfigPath);
    Config config = load_config(path, !opt.config_path, os);
    if (!config.errors.empty())
        return fail(kExitConfigInvalid, fmt::format("{}; nothing was changed", config.errors[0]));
    auto scan = scan_host(config, os);
    if (!scan)
        return fail(kExitError, scan.error().message);
    const TagRecord* record = scan->find(*tag);
    if (!record)
        return fail(kExitUnknownTag, fmt::format("no device or extent carries tag {}", tag->str()));
    if (record->state == TagState::conflict)
        return fail(kExitConflict,
                    fmt::format("tag {} is in conflict: {}", tag->str(), record->reason));
    if (record->state != TagState::offered) {
        const ProbedDevice* dev = record->device();
        if (record->source == TagSource::dcd && dev && dev->dev.mode == DevMode::disabled) {
            // It took the tag but has no driver (a bind that failed before).
            if (auto bound = bind_claimed(dev->dev.name, os); !bound)
                return fail(kExitKernelRefused,
                            fmt::format("claiming tag {}: {}", tag->str(), bound.error().message));
            fmt::print("tag {} is {} now\n", tag->str(), dev->dev.name);
            return kExitOk;
        }
        if (record->source == TagSource::dcd && dev) {
            fmt::print("tag {} is claimed already ({}, {})\n", tag->str(), dev->dev.name,
                       to_string(record->state));
            return kExitOk;
        }
        return fail(kExitNotUsable,
                    fmt::format("tag {} is not offered CXL capacity (it is {} "
                                "from {}); nothing to claim",
                                tag->str(), to_string(record->state), to_string(record->source)));
    }
    if (auto why = claim_refusal(*record))
        return fail(
            kExitNotClaimable,
            fmt::format("tag {} cannot be claimed: {}; nothing was changed", tag->str(), *why));
    auto claimed = claim_offered(*record, os);
    if (!claimed)
        return fail(kExitKernelRefused,
                    fmt::format("claiming tag {} failed: {}", tag->str(), claimed.error().message));
    if (!claimed->bound)
        return fail(kExitKernelRefused,
                    fmt::format("claiming tag {}: {}", tag->str(), claimed->bound.error().message));
    fmt::print("tag {} is {} now\n", tag->str(), claimed->device);
    return kExitOk;
}

// The way back: a claimed tag's device gives its capacity to the region
// again, so that the orchestrator's release (refused while the device held
// it) goes through when asked again. Refused while anyone has the device
// open or mapped: its data would be gone under them.
int cmd_unclaim(const std::string& tag_text, const QueryOptions& opt) {
    auto tag = Uuid::parse(tag_text);
    if (!tag)
        return fail(kExitUsage, tag.error().message);
    if (::geteuid() != 0)
        return fail(kExitNotRoot,
                    "tagmem unclaim takes capacity from a dax device: run it as root");
    HostOs& os = real_host_os();
    const std::string path = opt.config_path.value_or(kDefaultConfigPath);
    Config config = load_config(path, !opt.config_path, os);
    auto scan = scan_host(config, os);
    if (!scan)
        return fail(kExitError, scan.error().message);
    const TagRecord* record = scan->find(*tag);
    if (!record)
        return fail(kExitUnknownTag, fmt::format("no device or extent carries tag {}", tag->str()));
    if (record->state == TagState::conflict)
        return fail(kExitConflict,
                    fmt::format("tag {} is in conflict: {}", tag->str(), record->reason));
    if (record->state == TagState::offered) {
        fmt::print("tag {} is not claimed: its capacity is the region's already\n", tag->str());
        return kExitOk;
    }
    const ProbedDevice* dev = record->device();
    if (record->source != TagSource::dcd || !dev)
        return fail(kExitNotUsable,
                    fmt::format("tag {} is not claimed CXL Dynamic Capacity (it is "
                                "{} from {}); nothing to give back",
                                tag->str(), to_string(record->state), to_string(record->source)));
    if (dev->dev.mode == DevMode::system_ram)
        return fail(kExitNotUsable, fmt::format("tag {} is system RAM: `tagmem offline` it first; "
                                                "nothing was changed",
                                                tag->str()));
    auto users = find_device_users_within(dev->dev.devno, os, kUserScanTimeout);
    if (!users && users.error().code == kOtherPidNamespace)
        return fail(kExitPidNamespace,
                    fmt::format("{}; nothing was changed", users.error().message));
    if (!users)
        return fail(kExitInUse, fmt::format("cannot tell who uses {}, so it is taken as in use; "
                                            "nothing was changed: {}",
                                            dev->dev.name, users.error().message));
    if (!users->empty())
        return fail(kExitInUse, fmt::format("{} is in use by PID {} ({}); nothing was changed",
                                            dev->dev.name, users->front().pid, users->front().how));
    auto done = unclaim_device(dev->dev, os, [&] {
        return find_device_users_within(dev->dev.devno, os, kUserScanTimeout);
    });
    if (!done)
        return fail(done.error().code == kInUseError ? kExitInUse : kExitKernelRefused,
                    fmt::format("unclaiming tag {}: {}", tag->str(), done.error().message));
    fmt::print("tag {} gave its capacity back ({} is gone); its extents are offered until the "
               "orchestrator releases them\n",
               tag->str(), dev->dev.name);
    return kExitOk;
}

} // namespace tagmem::cli
