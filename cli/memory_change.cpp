// SPDX-License-Identifier: Apache-2.0
// tagmem online / offline <tag>: the opt-in to system RAM (docs/online.md).
// The command decides and reports; the policy and the kernel operations
// are core's (core/online.hpp). It runs here, as root, rather than in
// tagmemfs: the daemon's socket is open to every local user and stays
// read-only, and the daemon learns of the change from the kernel's uevents
// like of any `daxctl reconfigure-device`.
#include "memory_change.hpp"

#include "exit_codes.hpp"
#include "format.hpp"

#include "discovery.hpp"
#include "handoff.hpp"
#include "host_os.hpp"
#include "online.hpp"

#include <fmt/format.h>

#include <signal.h>
#include <unistd.h>

namespace tagmem::cli {
namespace {

int fail(int code, const std::string& message) {
    fmt::print(stderr, "tagmem: {}\n", message);
    return code;
}

int exit_code_of(Refusal r) {
    switch (r) {
    case Refusal::none: return kExitOk;
    case Refusal::config_invalid: return kExitConfigInvalid;
    case Refusal::unknown_tag: return kExitUnknownTag;
    case Refusal::conflict: return kExitConflict;
    case Refusal::not_ready: return kExitNotUsable;
    case Refusal::not_allowed: return kExitNotAllowed;
    case Refusal::in_use: return kExitInUse;
    }
    return kExitError;
}

void interrupted(int) {}

// Ctrl-C or SIGTERM during a change interrupts the kernel's work (the write
// returns EINTR) instead of killing tagmem half-way: core then puts back
// what it had done and says so.
void interrupt_instead_of_dying() {
    struct sigaction sa {};
    sa.sa_handler = &interrupted;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; // no SA_RESTART
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
}

Result<std::vector<DeviceUser>> users_of(const TagRecord* record, HostOs& os) {
    const ProbedDevice* dev = record ? record->device() : nullptr;
    if (!dev || dev->dev.mode != DevMode::devdax)
        return std::vector<DeviceUser>{};
    return find_device_users_within(dev->dev.devno, os, kUserScanTimeout);
}

} // namespace

int cmd_memory_change(MemoryChange change, const std::string& tag_text, const QueryOptions& opt) {
    const char* verb = change == MemoryChange::online ? "online" : "offline";
    auto tag = Uuid::parse(tag_text);
    if (!tag)
        return fail(kExitUsage, tag.error().message);
    if (::geteuid() != 0)
        return fail(kExitNotRoot, fmt::format("tagmem {} changes what the kernel does with "
                                              "memory: run it as root",
                                              verb));
    HostOs& os = real_host_os();
    const std::string path = opt.config_path.value_or(kDefaultConfigPath);
    Config config = load_config(path, !opt.config_path, os);
    auto scan = scan_host(config, os);
    if (!scan)
        return fail(kExitError, scan.error().message);
    const TagRecord* record = scan->find(*tag);
    // The policy first; /proc is read only for a change it allows.
    auto decision = decide_memory_change(change, *tag, record, config, {});
    if (decision.verdict == MemoryDecision::Verdict::proceed && change == MemoryChange::online) {
        auto users = users_of(record, os);
        if (!users && users.error().code == kOtherPidNamespace)
            return fail(kExitPidNamespace,
                        fmt::format("{}; nothing was changed", users.error().message));
        if (!users)
            return fail(kExitInUse, fmt::format("cannot tell who uses the device, so it is taken "
                                                "as in use; nothing was changed: {}",
                                                users.error().message));
        decision = decide_memory_change(change, *tag, record, config, *users);
    }
    if (decision.verdict == MemoryDecision::Verdict::refuse)
        return fail(exit_code_of(decision.refusal), decision.message + "; nothing was changed");
    if (decision.verdict == MemoryDecision::Verdict::nothing_to_do) {
        fmt::print("{}\n", decision.message);
        return kExitOk;
    }

    const DaxDevice& dev = record->device()->dev;
    interrupt_instead_of_dying();
    Status done = Ok{};
    if (change == MemoryChange::online) {
        // The first look at /proc was made while the device could still be
        // opened; this one is made once it cannot.
        auto recheck = [&]() -> Status {
            // Bounded: device_dax is unbound now, and whatever happens it
            // must be bound again (to_system_ram does on any failure).
            auto again = find_device_users_within(dev.devno, os, kUserScanTimeout);
            if (!again)
                return make_error(kInUseError, fmt::format("cannot tell who uses {}: {}", dev.name,
                                                           again.error().message));
            if (!again->empty())
                return make_error(kInUseError,
                                  fmt::format("{} was opened while tagmem checked it (pid {} {})",
                                              dev.name, (*again)[0].pid, (*again)[0].how));
            return Ok{};
        };
        // Marked first: a guest's tagmemfs must not bind device_dax back
        // while the device is between drivers, nor later (docs/vm.md).
        if (auto marked = mark_explicit_online(*tag, os); !marked)
            return fail(kExitError, fmt::format("cannot mark tag {} as onlined by the "
                                                "administrator: {}; nothing was changed",
                                                tag->str(), marked.error().message));
        done = to_system_ram(dev.name, os, recheck);
        if (!done) {
            // The mark stays only while kmem holds the device.
            auto dax = open_dax_driver(dev.name);
            if (dax && !(*dax)->is_system_ram())
                (void)clear_explicit_online(*tag, os);
        }
    } else {
        done = to_devdax(dev.name, os);
        if (done)
            (void)clear_explicit_online(*tag, os);
    }
    if (!done) {
        const int code = done.error().code;
        if (code == kInUseError)
            return fail(kExitInUse, done.error().message);
        return fail(kExitKernelRefused,
                    fmt::format("{} of tag {} failed: {}", verb, tag->str(), done.error().message));
    }
    if (change == MemoryChange::online) {
        auto blocks = memory_blocks(dev.resource, dev.size, os);
        std::string where;
        if (blocks && !blocks->blocks.empty())
            where = fmt::format(" ({} in {} memory block{}, NUMA node {})",
                                human_size(blocks->online_bytes()), blocks->blocks.size(),
                                blocks->blocks.size() == 1 ? "" : "s", blocks->blocks.front().node);
        fmt::print("tag {} ({}) is system RAM now{}, target node {}\n", tag->str(), dev.name, where,
                   dev.target_node);
    } else {
        fmt::print("tag {} ({}) is devdax again\n", tag->str(), dev.name);
    }
    return kExitOk;
}

} // namespace tagmem::cli
