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

// /proc/<pid> entries are numbers; everything else there is not a process.
bool is_pid(const std::string& name) {
    return !name.empty() && name.find_first_not_of("0123456789") == std::string::npos;
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

Error daxctl_error(const Daxctl& d, int rc, const std::string& what) {
    return make_error(-rc, fmt::format("{}: {}: {}{}", daxctl_dev_get_devname(d.dev), what,
                                       std::strerror(-rc), d.said()));
}

// The kernel's policy for memory it adds (memhp_default_state): blocks it
// onlines itself land in the zone it picks, not necessarily ZONE_MOVABLE.
Result<std::string> auto_online_policy(HostOs& os) {
    auto text = os.read_file(std::string(kMemoryRoot) + "/auto_online_blocks");
    if (!text)
        return text.error();
    return std::string(trim_attr(*text));
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

Result<std::vector<DeviceUser>> find_device_users(DevNumber rdev, HostOs& os) {
    auto pids = os.list_dir("/proc");
    if (!pids)
        return pids.error();
    std::vector<DeviceUser> users;
    auto is_the_device = [&](const std::string& path) -> Result<bool> {
        auto node = os.stat_node(path);
        if (!node)
            return node.error();
        return node->type == NodeType::char_device && node->rdev == rdev;
    };
    auto command_of = [&](const std::string& pid) {
        auto comm = os.read_file("/proc/" + pid + "/comm");
        return comm ? std::string(trim_attr(*comm)) : std::string();
    };
    std::sort(pids->begin(), pids->end(), [](const std::string& a, const std::string& b) {
        return a.size() != b.size() ? a.size() < b.size() : a < b;
    });
    for (const auto& pid : *pids) {
        if (!is_pid(pid))
            continue;
        const std::string dir = "/proc/" + pid;
        auto found = [&](std::string how) {
            users.push_back({std::stoi(pid), command_of(pid), std::move(how)});
        };
        // The links in dir/sub that lead to the device. False: the process
        // ended while being looked at, which is no user.
        auto scan = [&](const char* sub, const char* verb, const char* label) -> Result<bool> {
            auto entries = os.list_dir(dir + "/" + sub);
            if (!entries) {
                if (vanished(entries.error()))
                    return false;
                return entries.error();
            }
            for (const auto& entry : *entries) {
                auto hit = is_the_device(dir + "/" + sub + "/" + entry);
                if (!hit) {
                    if (vanished(hit.error()))
                        continue;
                    return make_error(hit.error().code,
                                      fmt::format("cannot tell whether pid {} {} the device: {}",
                                                  pid, verb, hit.error().message));
                }
                if (*hit)
                    found(fmt::format("{} {}", label, entry));
            }
            return true;
        };
        // Open descriptors: stat() follows each to the file it holds.
        auto alive = scan("fd", "uses", "fd");
        if (!alive)
            return alive.error();
        if (!*alive)
            continue;
        // Mappings outlive the descriptor they were made through.
        // map_files lists the file mappings, named start-end; following
        // one takes CAP_SYS_ADMIN (tagmem online runs as root).
        if (auto mapped = scan("map_files", "maps", "mapping"); !mapped)
            return mapped.error();
    }
    return users;
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

Status to_system_ram(const std::string& device, HostOs& os,
                     const std::function<Status()>& recheck) {
    auto policy = auto_online_policy(os);
    if (!policy) {
        if (policy.error().code == ENOENT)
            return make_error(EOPNOTSUPP, fmt::format("this kernel has no memory hotplug ({} is "
                                                      "missing); nothing was changed",
                                                      kMemoryRoot));
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
    auto opened = open_device(device);
    if (!opened)
        return opened.error();
    Daxctl& d = **opened;
    if (daxctl_dev_get_memory(d.dev))
        return make_error(EALREADY, fmt::format("{} is already system RAM", device));

    if (int rc = daxctl_dev_disable(d.dev); rc < 0)
        return daxctl_error(d, rc, "cannot unbind device_dax; nothing was changed");
    // From here on an open() of the device fails (its character device is
    // gone): whoever the first look missed is in /proc now, or never.
    if (auto ok = recheck(); !ok) {
        int rc = daxctl_dev_enable_devdax(d.dev);
        return make_error(ok.error().code,
                          fmt::format("{}; {} is devdax again{}", ok.error().message, device,
                                      rc < 0 ? fmt::format(" - NOT: rebinding device_dax failed: "
                                                           "{}",
                                                           std::strerror(-rc))
                                             : ""));
    }
    if (int rc = daxctl_dev_enable_ram(d.dev); rc < 0) {
        auto err = daxctl_error(d, rc, "cannot bind kmem");
        int back = daxctl_dev_enable_devdax(d.dev);
        err.message += back < 0 ? fmt::format("; rebinding device_dax failed too ({}): the device "
                                              "has no driver",
                                              std::strerror(-back))
                                : "; it is devdax again";
        return err;
    }
    daxctl_memory* mem = daxctl_dev_get_memory(d.dev);
    if (!mem)
        return make_error(ENXIO, fmt::format("{}: kmem is bound but libdaxctl sees no memory "
                                             "object; see daxctl list -M",
                                             device));
    int rc = daxctl_memory_online(mem);
    if (rc < 0)
        return daxctl_error(d, rc,
                            "kmem is bound but onlining its memory blocks to ZONE_MOVABLE failed "
                            "(some may be online; see tagmem show and daxctl list)");
    int online = daxctl_memory_is_online(mem);
    int sections = daxctl_memory_num_sections(mem);
    if (online < 0 || sections < 0 || online < sections)
        return make_error(ENXIO, fmt::format("{}: {} of {} memory blocks are online{}", device,
                                             online, sections, d.said()));
    return Ok{};
}

Status to_devdax(const std::string& device, HostOs& os) {
    auto opened = open_device(device);
    if (!opened)
        return opened.error();
    Daxctl& d = **opened;
    daxctl_memory* mem = daxctl_dev_get_memory(d.dev);
    if (!mem)
        return make_error(EALREADY, fmt::format("{} is not system RAM", device));
    int rc = daxctl_memory_offline(mem);
    int still = daxctl_memory_is_online(mem);
    if (rc < 0 || still != 0) {
        // Say which blocks stayed, then put back those that went: the
        // device is either devdax or all system RAM, never half of each.
        std::string stayed;
        if (auto blocks =
                memory_blocks(daxctl_dev_get_resource(d.dev), daxctl_dev_get_size(d.dev), os))
            stayed = blocks->names(true);
        std::string reason = rc < 0 ? std::strerror(-rc) : "blocks still online";
        std::string why =
            rc == -EBUSY || (rc >= 0 && still > 0)
                ? "the kernel could not migrate every page out of them (pages in use that "
                  "cannot move: pinned, or not in ZONE_MOVABLE)"
            : rc == -EINTR ? "interrupted by a signal"
                           : "offlining failed";
        const std::string log = d.said();
        int back = daxctl_memory_online(mem);
        return make_error(rc == -EINTR ? EINTR : EBUSY,
                          fmt::format("{}: cannot offline its memory: {} ({}){}; blocks still "
                                      "online: {}; {}",
                                      device, why, reason, log, stayed.empty() ? "?" : stayed,
                                      back < 0 ? fmt::format("onlining the others again failed "
                                                             "({}): check daxctl list -M",
                                                             std::strerror(-back))
                                               : "it stays system RAM"));
    }
    if (rc = daxctl_dev_disable(d.dev); rc < 0)
        return daxctl_error(d, rc,
                            "memory is offline but kmem cannot be unbound (a kernel older "
                            "than 5.9 cannot release it before a reboot)");
    if (rc = daxctl_dev_enable_devdax(d.dev); rc < 0)
        return daxctl_error(d, rc,
                            "kmem released it but device_dax cannot be bound; the device "
                            "has no driver (daxctl enable-device)");
    return Ok{};
}

} // namespace tagmem
