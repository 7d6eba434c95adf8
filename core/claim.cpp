// SPDX-License-Identifier: Apache-2.0
#include "claim.hpp"

#include "host_os.hpp"
#include "probe.hpp"
#include "sysfs_value.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

namespace tagmem {
namespace {

// The kernel's DC ABI (DCD series v11): the region's DAX region device on
// the cxl bus holds the extents and the dax devices; its `dax_region`
// group has `create`, which makes a new 0-size seed while capacity is
// unclaimed.
std::string dax_region_link(std::uint32_t region) {
    return fmt::format("/sys/bus/cxl/devices/dax_region{}", region);
}

bool is_device_of(std::string_view name, std::uint32_t region) {
    const auto prefix = fmt::format("dax{}.", region);
    if (!name.starts_with(prefix))
        return false;
    name.remove_prefix(prefix.size());
    return !name.empty() &&
           std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// A seed: size 0, no tag, no driver. Anything else in the region belongs to
// somebody (a claimed tag, an untagged claim, a device being torn down).
Result<bool> is_seed(const std::string& dir, HostOs& os) {
    auto size = os.read_file(dir + "/size");
    if (!size)
        return size.error();
    auto bytes = parse_u64(*size);
    if (!bytes || *bytes != 0)
        return false;
    if (auto uuid = os.read_file(dir + "/uuid")) {
        auto tag = parse_tag_attr(*uuid);
        if (!tag || *tag)
            return false;
    } else if (uuid.error().code != ENOENT) {
        return uuid.error();
    }
    auto driver = os.lstat_node(dir + "/driver");
    if (driver)
        return false;
    if (driver.error().code != ENOENT)
        return driver.error();
    return true;
}

Result<std::optional<std::string>> find_seed(const std::string& region_dir, std::uint32_t region,
                                             HostOs& os) {
    auto names = os.list_dir(region_dir);
    if (!names)
        return names.error();
    std::sort(names->begin(), names->end()); // the same seed every time
    for (const auto& name : *names) {
        if (!is_device_of(name, region))
            continue;
        auto seed = is_seed(region_dir + "/" + name, os);
        if (!seed && !is_gone(seed.error().code))
            return seed.error();
        if (seed && *seed)
            return std::optional<std::string>(name);
    }
    return std::optional<std::string>();
}

// The kernel's own bind first: libdaxctl's enable also loads the driver's
// module through libkmod, which fails where device_dax is built in and no
// modules.builtin is installed (seen on a DCD guest kernel), and needs
// CAP_SYS_MODULE. Where the driver is not loaded at all (no bind file),
// libdaxctl loads it.
} // namespace

Status bind_claimed(const std::string& name, HostOs& os) {
    constexpr const char* kBind = "/sys/bus/dax/drivers/device_dax/bind";
    auto written = os.write_file(kBind, name);
    if (!written && written.error().code == ENOENT) {
        if (auto enabled = os.enable_devdax(name); !enabled)
            return make_error(enabled.error().code,
                              fmt::format("{} took the tag but device_dax would not bind it: {}",
                                          name, enabled.error().message));
    } else if (!written) {
        return make_error(written.error().code,
                          fmt::format("{} took the tag but device_dax would not bind it: {}", name,
                                      written.error().message));
    }
    // A bind that the driver's probe refused reports success on some
    // kernels; the driver link is what counts.
    auto driver = os.link_target(fmt::format("/sys/bus/dax/devices/{}/driver", name));
    if (!driver)
        return make_error(driver.error().code,
                          fmt::format("{} took the tag but device_dax did not bind it", name));
    if (base_name(*driver) != "device_dax")
        return make_error(EBUSY, fmt::format("{} took the tag but is bound to {}", name,
                                             std::string(base_name(*driver))));
    return Ok{};
}

std::optional<std::string> claim_refusal(const TagRecord& offered, std::uint64_t align) {
    if (offered.state != TagState::offered)
        return fmt::format("it is {}, not offered capacity", to_string(offered.state));
    const auto& extents = offered.offered_extents;
    if (extents.empty())
        return std::string("no extent carries it");
    for (const auto& e : extents) {
        if (e.name.region != extents.front().name.region)
            return fmt::format("its extents lie in two regions ({} and {}); the kernel makes a "
                               "device of one region's",
                               extents.front().name.str(), e.name.str());
        if (align && (e.offset % align || e.length % align || e.length == 0))
            return fmt::format("{} ({:#x}, length {:#x}) is not aligned to {:#x}", e.name.str(),
                               e.offset, e.length, align);
    }
    std::vector<Extent> sorted = extents;
    std::sort(sorted.begin(), sorted.end(),
              [](const Extent& a, const Extent& b) { return a.offset < b.offset; });
    for (std::size_t i = 1; i < sorted.size(); ++i)
        if (sorted[i].offset < sorted[i - 1].offset + sorted[i - 1].length)
            return fmt::format("{} and {} overlap", sorted[i - 1].name.str(), sorted[i].name.str());
    return std::nullopt;
}

bool claims_automatically(const Config& config, const Uuid& tag) {
    return config.claim_mode(tag) == ClaimMode::automatic;
}

Result<Claimed> claim_offered(const TagRecord& offered, HostOs& os) {
    if (auto why = claim_refusal(offered))
        return make_error(EINVAL, *why);
    const std::uint32_t region = offered.offered_extents.front().name.region;
    auto region_dir = os.link_target(dax_region_link(region));
    if (!region_dir)
        return make_error(region_dir.error().code, fmt::format("DAX region {} of its extents: {}",
                                                               region, region_dir.error().message));
    auto seed = find_seed(*region_dir, region, os);
    if (!seed)
        return make_error(seed.error().code,
                          fmt::format("cannot look for a seed device: {}", seed.error().message));
    if (!*seed) {
        // The kernel makes no new seed after a claim; `create` does, while
        // the region has unclaimed capacity (as daxctl create-device).
        if (auto made = os.write_file(*region_dir + "/dax_region/create", "1"); !made)
            return make_error(made.error().code, fmt::format("no seed device, and none can be "
                                                             "made: {}",
                                                             made.error().message));
        seed = find_seed(*region_dir, region, os);
        if (!seed)
            return seed.error();
        if (!*seed)
            return make_error(ENODEV, fmt::format("dax_region{} made no seed device", region));
    }
    Claimed claimed{**seed, Ok{}};
    const std::string dir = "/sys/bus/dax/devices/" + claimed.device;
    // ENOENT here is the kernel's "no capacity carries this tag": it went
    // (released) between the scan and now.
    if (auto ok = os.write_file(dir + "/uuid", offered.tag.str()); !ok)
        return make_error(ok.error().code, fmt::format("the kernel refused to give {} the tag: {}",
                                                       claimed.device, ok.error().message));
    claimed.bound = bind_claimed(claimed.device, os);
    return claimed;
}

Status unclaim_device(const DaxDevice& device, HostOs& os,
                      const std::function<Result<std::vector<DeviceUser>>()>& users) {
    const std::string& name = device.name;
    if (device.region_id < 0 || !is_dc_region_path(device.region_path()) ||
        !is_device_of(name, static_cast<std::uint32_t>(device.region_id)))
        return make_error(EINVAL, fmt::format("{} is not a device of a DC region", name));
    if (device.mode == DevMode::system_ram)
        return make_error(EBUSY, fmt::format("{} is system RAM: tagmem offline it first", name));
    auto region_dir = os.link_target(dax_region_link(static_cast<std::uint32_t>(device.region_id)));
    if (!region_dir)
        return make_error(region_dir.error().code,
                          fmt::format("DAX region {} of {}: {}", device.region_id, name,
                                      region_dir.error().message));
    const bool was_bound = device.mode != DevMode::disabled;
    if (was_bound) {
        if (auto ok = os.write_file("/sys/bus/dax/drivers/device_dax/unbind", name); !ok)
            return make_error(ok.error().code, fmt::format("device_dax would not let {} go: {}; "
                                                           "nothing was changed",
                                                           name, ok.error().message));
    }
    // Bound again on every way out that keeps the capacity: a claimed tag
    // must not be left without its driver.
    auto keep = [&](int code, const std::string& why) -> Status {
        if (!was_bound)
            return make_error(code,
                              fmt::format("{}; {} keeps the tag, unbound as before", why, name));
        if (auto bound = bind_claimed(name, os); !bound)
            return make_error(code, fmt::format("{}; {} keeps the tag, and binding it again "
                                                "failed: {}",
                                                why, name, bound.error().message));
        return make_error(code, fmt::format("{}; {} keeps the tag and is bound again", why, name));
    };
    // Nobody can open it now: who still holds a descriptor or a mapping had
    // it before the unbind, and the first look could have raced an open.
    auto holders = users();
    if (!holders)
        return keep(holders.error().code,
                    fmt::format("cannot tell who uses {}: {}", name, holders.error().message));
    if (!holders->empty()) {
        std::string who;
        for (const auto& u : *holders)
            who += fmt::format("{}PID {} ({}, {})", who.empty() ? "" : ", ", u.pid,
                               u.command.empty() ? "?" : u.command, u.how);
        return keep(kInUseError, fmt::format("{} is in use by {}", name, who));
    }
    const std::string dir = "/sys/bus/dax/devices/" + name;
    if (auto ok = os.write_file(dir + "/size", "0"); !ok)
        return keep(ok.error().code,
                    fmt::format("the kernel would not shrink {}: {}", name, ok.error().message));
    // Size 0 gave the extents back; the empty device is a seed the region
    // may keep (the kernel refuses to delete its seed), which is no loss.
    if (auto ok = os.write_file(*region_dir + "/dax_region/delete", name);
        !ok && ok.error().code != EBUSY)
        return make_error(ok.error().code,
                          fmt::format("{} gave its capacity back but could not be deleted: {}",
                                      name, ok.error().message));
    return Ok{};
}

} // namespace tagmem
