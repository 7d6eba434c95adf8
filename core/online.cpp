// SPDX-License-Identifier: Apache-2.0
#include "online.hpp"

#include "host_os.hpp"

#include <daxctl/libdaxctl.h>
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <memory>

namespace tagmem {
namespace {

constexpr const char* kMemoryRoot = "/sys/devices/system/memory";

MemoryDecision refuse(Refusal why, std::string message) {
    return {MemoryDecision::Verdict::refuse, why, std::move(message)};
}

std::string users_text(const std::vector<DeviceUser>& users) {
    std::string out;
    constexpr std::size_t kShown = 8;
    for (std::size_t i = 0; i < users.size() && i < kShown; ++i)
        out += fmt::format("{}pid {} ({}) {}", i ? ", " : "", users[i].pid,
                           users[i].command.empty() ? "?" : users[i].command, users[i].how);
    if (users.size() > kShown)
        out += fmt::format(" and {} more", users.size() - kShown);
    return out;
}

// A process or descriptor that vanished while we looked was no user.
bool vanished(const Error& e) {
    return e.code == ENOENT || e.code == ESRCH;
}

Result<std::uint64_t> parse_hex(std::string_view raw) {
    auto text = trim_attr(raw);
    if (text.starts_with("0x"))
        text.remove_prefix(2);
    std::uint64_t v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v, 16);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size())
        return make_error(EINVAL, fmt::format("not a hexadecimal number: '{}'", text));
    return v;
}

// --- libdaxctl ---------------------------------------------------------

struct CtxDeleter {
    void operator()(daxctl_ctx* ctx) const { daxctl_unref(ctx); }
};
using DaxctlCtx = std::unique_ptr<daxctl_ctx, CtxDeleter>;

// libdaxctl's own messages (which block failed and why) are worth keeping:
// they are collected and added to the error.
void collect_log(daxctl_ctx* ctx, int, const char*, int, const char*, const char* format,
                 va_list args) {
    auto* lines = static_cast<std::vector<std::string>*>(daxctl_get_userdata(ctx));
    if (!lines)
        return;
    char buf[512];
    std::vsnprintf(buf, sizeof buf, format, args);
    std::string line(buf);
    while (!line.empty() && line.back() == '\n')
        line.pop_back();
    lines->push_back(std::move(line));
}

struct Daxctl {
    DaxctlCtx ctx;
    daxctl_dev* dev = nullptr;
    std::vector<std::string> log;

    std::string said() const {
        std::string out;
        for (const auto& l : log)
            out += (out.empty() ? " (libdaxctl: " : "; ") + l;
        return out.empty() ? out : out + ")";
    }
};

Result<std::unique_ptr<Daxctl>> open_device(const std::string& name) {
    auto d = std::make_unique<Daxctl>();
    daxctl_ctx* raw = nullptr;
    if (int rc = daxctl_new(&raw); rc < 0)
        return make_error(-rc, fmt::format("libdaxctl: cannot start: {}", std::strerror(-rc)));
    d->ctx.reset(raw);
    daxctl_set_userdata(raw, &d->log);
    daxctl_set_log_fn(raw, &collect_log);
    daxctl_set_log_priority(raw, 3 /* LOG_ERR */);
    daxctl_region* region;
    daxctl_region_foreach(raw, region) {
        daxctl_dev* dev;
        daxctl_dev_foreach(region, dev) {
            if (name == daxctl_dev_get_devname(dev))
                d->dev = dev;
        }
    }
    if (!d->dev)
        return make_error(ENODEV, fmt::format("{}: libdaxctl does not find it", name));
    return d;
}

class LibDaxctlDriver final : public DaxDriver {
  public:
    explicit LibDaxctlDriver(std::unique_ptr<Daxctl> d) : d_(std::move(d)) {}
    bool is_system_ram() override { return daxctl_dev_get_memory(d_->dev) != nullptr; }
    int disable() override { return daxctl_dev_disable(d_->dev); }
    int enable_devdax() override { return daxctl_dev_enable_devdax(d_->dev); }
    int enable_ram() override { return daxctl_dev_enable_ram(d_->dev); }
    int memory_online() override { return on_memory(&daxctl_memory_online); }
    int memory_offline() override { return on_memory(&daxctl_memory_offline); }
    int blocks_online() override { return on_memory(&daxctl_memory_is_online); }
    int blocks() override { return on_memory(&daxctl_memory_num_sections); }
    int movable() override { return on_memory(&daxctl_memory_is_movable); }
    std::uint64_t start() override { return daxctl_dev_get_resource(d_->dev); }
    std::uint64_t size() override { return daxctl_dev_get_size(d_->dev); }
    std::string said() override { return d_->said(); }

  private:
    // kmem's memory object; -ENXIO when libdaxctl sees none (not system RAM).
    int on_memory(int (*op)(daxctl_memory*)) {
        daxctl_memory* mem = daxctl_dev_get_memory(d_->dev);
        return mem ? op(mem) : -ENXIO;
    }
    std::unique_ptr<Daxctl> d_;
};

Error driver_error(DaxDriver& d, const std::string& device, int rc, const std::string& what) {
    return make_error(-rc, fmt::format("{}: {}: {}{}", device, what, std::strerror(-rc), d.said()));
}

// The kernel's policy for memory it adds (memhp_default_state): blocks it
// onlines itself land in the zone it picks, not necessarily ZONE_MOVABLE.
Result<std::string> auto_online_policy(HostOs& os) {
    auto text = os.read_file(std::string(kMemoryRoot) + "/auto_online_blocks");
    if (!text)
        return text.error();
    return std::string(trim_attr(*text));
}

Error no_memory_hotplug() {
    return make_error(EOPNOTSUPP, fmt::format("this kernel has no memory hotplug ({} is "
                                              "missing); nothing was changed",
                                              kMemoryRoot));
}

// Undoes a to_system_ram() that got as far as binding kmem, as offline
// does: the blocks offlined, kmem unbound, device_dax bound again. Says
// where the device was left.
std::string roll_back_ram(DaxDriver& d, const std::string& device, HostOs& os) {
    int rc = d.memory_offline();
    if (rc < 0 || d.blocks_online() != 0) {
        std::string stayed;
        if (auto blocks = memory_blocks(d.start(), d.size(), os))
            stayed = blocks->names(true);
        return fmt::format("undoing it failed: blocks {} cannot be offlined{}; {} stays with "
                           "kmem (tagmem offline, or daxctl offline-memory, when they are free)",
                           stayed.empty() ? "?" : stayed,
                           rc < 0 ? fmt::format(" ({})", std::strerror(-rc)) : "", device);
    }
    if (rc = d.disable(); rc < 0)
        return fmt::format("undone as far as offlining its blocks; kmem cannot be unbound ({}): "
                           "a kernel older than 5.9 keeps it until a reboot",
                           std::strerror(-rc));
    if (rc = d.enable_devdax(); rc < 0)
        return fmt::format("kmem is unbound but device_dax cannot be bound ({}): the device has "
                           "no driver (daxctl enable-device {})",
                           std::strerror(-rc), device);
    return fmt::format("undone: {} is devdax again", device);
}

} // namespace

MemoryDecision decide_memory_change(MemoryChange change, const Uuid& tag, const TagRecord* record,
                                    const Config& config, const std::vector<DeviceUser>& users) {
    const char* verb = change == MemoryChange::online ? "online" : "offline";
    if (!config.errors.empty())
        return refuse(Refusal::config_invalid,
                      fmt::format("{} has errors; tagmem {} decides nothing on it until they are "
                                  "fixed (first: {})",
                                  config.origin, verb, config.errors.front()));
    if (!record)
        return refuse(Refusal::unknown_tag, fmt::format("no device carries tag {}", tag.str()));
    if (record->state == TagState::conflict)
        return refuse(Refusal::conflict,
                      fmt::format("tag {} is in conflict: {}", tag.str(), record->reason));
    const TagConfig* tc = config.find(tag);
    if (!tc || !tc->online)
        return refuse(Refusal::not_allowed,
                      fmt::format("tag {} is not allowed to become system RAM: {} has no "
                                  "'online = allow' in its [tag {}] section",
                                  tag.str(), config.origin, tag.str()));
    if (record->shareable && !tc->online_shareable)
        return refuse(Refusal::not_allowed,
                      fmt::format("tag {} is shareable (other hosts may use this memory) and {} "
                                  "does not also say 'online-shareable = allow' for it",
                                  tag.str(), config.origin));
    const ProbedDevice* dev = record->device();
    if (!dev)
        return refuse(Refusal::not_ready, fmt::format("tag {} has no device ({})", tag.str(),
                                                      to_string(record->state)));
    const std::string& name = dev->dev.name;
    const DevMode mode = dev->dev.mode;
    if (change == MemoryChange::online) {
        if (mode == DevMode::system_ram)
            return {MemoryDecision::Verdict::nothing_to_do, Refusal::none,
                    fmt::format("tag {} ({}) is already system RAM", tag.str(), name)};
        if (mode != DevMode::devdax)
            return refuse(Refusal::not_ready,
                          fmt::format("tag {} ({}) is {}, not devdax{}", tag.str(), name,
                                      to_string(mode),
                                      record->reason.empty() ? "" : ": " + record->reason));
        if (!users.empty())
            return refuse(Refusal::in_use,
                          fmt::format("tag {} ({}) is in use: {}; its memory would be taken "
                                      "from under them",
                                      tag.str(), name, users_text(users)));
        return {MemoryDecision::Verdict::proceed, Refusal::none, {}};
    }
    if (mode == DevMode::devdax)
        return {MemoryDecision::Verdict::nothing_to_do, Refusal::none,
                fmt::format("tag {} ({}) is already devdax", tag.str(), name)};
    if (mode != DevMode::system_ram)
        return refuse(Refusal::not_ready, fmt::format("tag {} ({}) is {}, not system-ram",
                                                      tag.str(), name, to_string(mode)));
    return {MemoryDecision::Verdict::proceed, Refusal::none, {}};
}

std::uint64_t MemoryBlocks::online_bytes() const {
    return block_size * static_cast<std::uint64_t>(std::count_if(
                            blocks.begin(), blocks.end(), [](const auto& b) { return b.online; }));
}

std::string MemoryBlocks::names(bool online) const {
    std::string out;
    for (const auto& b : blocks)
        if (b.online == online)
            out += (out.empty() ? "" : " ") + b.name;
    return out;
}

Result<MemoryBlocks> memory_blocks(std::uint64_t start, std::uint64_t size, HostOs& os) {
    MemoryBlocks out;
    const std::string root = kMemoryRoot;
    auto bs_text = os.read_file(root + "/block_size_bytes");
    if (!bs_text)
        return bs_text.error();
    auto bs = parse_hex(*bs_text);
    if (!bs || *bs == 0)
        return make_error(EINVAL, fmt::format("{}/block_size_bytes: not a block size", root));
    out.block_size = *bs;
    auto names = os.list_dir(root);
    if (!names)
        return names.error();
    for (const auto& name : *names) {
        if (!name.starts_with("memory") || name.size() == 6 ||
            name.find_first_not_of("0123456789", 6) != std::string::npos)
            continue;
        const std::string dir = root + "/" + name;
        auto index_text = os.read_file(dir + "/phys_index");
        if (!index_text) {
            if (vanished(index_text.error()))
                continue; // removed while we looked
            return index_text.error();
        }
        auto index = parse_hex(*index_text);
        if (!index)
            return make_error(EINVAL, fmt::format("{}/phys_index: {}", dir, index.error().message));
        const std::uint64_t at = *index * out.block_size;
        if (at < start || at - start >= size)
            continue;
        auto state = os.read_file(dir + "/state");
        if (!state)
            return state.error();
        MemoryBlock b{name, trim_attr(*state) == "online", -1};
        if (auto entries = os.list_dir(dir))
            for (const auto& e : *entries)
                if (e.starts_with("node") && e.size() > 4)
                    if (auto n = parse_i64(std::string_view(e).substr(4)))
                        b.node = static_cast<int>(*n);
        out.blocks.push_back(std::move(b));
    }
    std::sort(out.blocks.begin(), out.blocks.end(), [](const auto& a, const auto& b) {
        return std::make_pair(a.name.size(), a.name) < std::make_pair(b.name.size(), b.name);
    });
    return out;
}

Result<std::unique_ptr<DaxDriver>> open_dax_driver(const std::string& name) {
    auto opened = open_device(name);
    if (!opened)
        return opened.error();
    return std::unique_ptr<DaxDriver>(std::make_unique<LibDaxctlDriver>(std::move(*opened)));
}

Status to_system_ram(const std::string& device, HostOs& os,
                     const std::function<Status()>& recheck) {
    auto dax = open_dax_driver(device);
    if (!dax)
        return dax.error();
    return to_system_ram(**dax, device, os, recheck);
}

Status to_system_ram(DaxDriver& d, const std::string& device, HostOs& os,
                     const std::function<Status()>& recheck) {
    auto policy = auto_online_policy(os);
    if (!policy) {
        if (policy.error().code == ENOENT)
            return no_memory_hotplug();
        return policy.error();
    }
    // "offline": tagmem onlines the blocks itself; "online_movable": the
    // kernel puts them where tagmem would. "online"/"online_kernel" would put
    // them in ZONE_NORMAL, from where they may never come back offline.
    if (*policy != "offline" && *policy != "online_movable")
        return make_error(EPERM, fmt::format("the kernel onlines hot-added memory itself "
                                             "(auto_online_blocks = {}), into a zone from which "
                                             "it may not come back; set it to offline or "
                                             "online_movable first. Nothing was changed",
                                             *policy));
    if (d.is_system_ram())
        return make_error(EALREADY, fmt::format("{} is already system RAM", device));

    if (int rc = d.disable(); rc < 0)
        return driver_error(d, device, rc, "cannot unbind device_dax; nothing was changed");
    // From here on an open() of the device fails (its character device is
    // gone): whoever the first look missed is in /proc now, or never.
    if (auto ok = recheck(); !ok) {
        int rc = d.enable_devdax();
        return make_error(ok.error().code,
                          fmt::format("{}; {} is devdax again{}", ok.error().message, device,
                                      rc < 0 ? fmt::format(" - NOT: rebinding device_dax failed: "
                                                           "{}",
                                                           std::strerror(-rc))
                                             : ""));
    }
    if (int rc = d.enable_ram(); rc < 0) {
        auto err = driver_error(d, device, rc, "cannot bind kmem");
        int back = d.enable_devdax();
        err.message += back < 0 ? fmt::format("; rebinding device_dax failed too ({}): the device "
                                              "has no driver",
                                              std::strerror(-back))
                                : "; it is devdax again";
        return err;
    }
    // Online every block, then check that all are, and all in ZONE_MOVABLE:
    // a udev rule (or the kernel) may have onlined some first, elsewhere.
    std::string what;
    int code = 0;
    if (int rc = d.memory_online(); rc < 0) {
        code = -rc;
        what = fmt::format("onlining its memory blocks to ZONE_MOVABLE failed: {}{}",
                           std::strerror(-rc), d.said());
    } else if (int online = d.blocks_online(), all = d.blocks();
               online < 0 || all < 0 || online < all) {
        code = ENXIO;
        what = fmt::format("{} of {} memory blocks are online{}", online, all, d.said());
    } else if (int movable = d.movable(); movable != 1) {
        code = movable < 0 ? -movable : EXDEV;
        what = movable < 0 ? fmt::format("cannot tell the zone of its memory blocks: {}{}",
                                         std::strerror(-movable), d.said())
                           : "some of its memory blocks were onlined outside ZONE_MOVABLE (by "
                             "a udev rule or the kernel), from where they may never be "
                             "offlined";
    }
    if (!code)
        return Ok{};
    return make_error(code, fmt::format("{}: {}; {}", device, what, roll_back_ram(d, device, os)));
}

Status to_devdax(const std::string& device, HostOs& os) {
    auto dax = open_dax_driver(device);
    if (!dax)
        return dax.error();
    return to_devdax(**dax, device, os);
}

Status to_devdax(DaxDriver& d, const std::string& device, HostOs& os) {
    if (!d.is_system_ram())
        return make_error(EALREADY, fmt::format("{} is not system RAM", device));
    int rc = d.memory_offline();
    int still = d.blocks_online();
    if (rc < 0 || still != 0) {
        // Say which blocks stayed, then put back those that went: the
        // device is either devdax or all system RAM, never half of each.
        std::string stayed;
        if (auto blocks = memory_blocks(d.start(), d.size(), os))
            stayed = blocks->names(true);
        std::string reason = rc < 0 ? std::strerror(-rc) : "blocks still online";
        std::string why =
            rc == -EBUSY || (rc >= 0 && still > 0)
                ? "the kernel could not migrate every page out of them (pages in use that "
                  "cannot move: pinned, or not in ZONE_MOVABLE)"
            : rc == -EINTR ? "interrupted by a signal"
                           : "offlining failed";
        const std::string log = d.said();
        int back = d.memory_online();
        return make_error(rc == -EINTR ? EINTR : EBUSY,
                          fmt::format("{}: cannot offline its memory: {} ({}){}; blocks still "
                                      "online: {}; {}",
                                      device, why, reason, log, stayed.empty() ? "?" : stayed,
                                      back < 0 ? fmt::format("onlining the others again failed "
                                                             "({}): check daxctl list -M",
                                                             std::strerror(-back))
                                               : "it stays system RAM"));
    }
    if (rc = d.disable(); rc < 0)
        return driver_error(d, device, rc,
                            "memory is offline but kmem cannot be unbound (a kernel older "
                            "than 5.9 cannot release it before a reboot)");
    if (rc = d.enable_devdax(); rc < 0)
        return driver_error(d, device, rc,
                            "kmem released it but device_dax cannot be bound; the device "
                            "has no driver (daxctl enable-device)");
    return Ok{};
}

} // namespace tagmem
