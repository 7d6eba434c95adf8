// SPDX-License-Identifier: Apache-2.0
// Runs here, as root, for the reason tagmem online does: the daemon's socket
// is open to every user and stays read-only. tagmemfs learns of the new
// device from its bind uevent (or its next scan) like of any other.
#include "claim_command.hpp"

#include "exit_codes.hpp"

#include "claim.hpp"
#include "discovery.hpp"
#include "host_os.hpp"

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

} // namespace tagmem::cli
