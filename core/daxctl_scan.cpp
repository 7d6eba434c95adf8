// SPDX-License-Identifier: Apache-2.0
#include "daxctl_scan.hpp"

#include "host_os.hpp"

#include <daxctl/libdaxctl.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>

namespace tagmem {
namespace {

constexpr const char* kDaxBusDevices = "/sys/bus/dax/devices";

struct CtxDeleter {
    void operator()(daxctl_ctx* ctx) const { daxctl_unref(ctx); }
};
using DaxctlCtx = std::unique_ptr<daxctl_ctx, CtxDeleter>;

// libdaxctl logs to stderr at LOG_ERR by default for devices it cannot read;
// tagmem reports those itself, in its own words.
void quiet_log(daxctl_ctx*, int, const char*, int, const char*, const char*, va_list) {}

std::optional<std::uint64_t> read_u64(HostOs& os, const std::string& path) {
    auto text = os.read_file(path);
    if (!text)
        return std::nullopt;
    auto v = parse_u64(*text);
    return v ? std::optional<std::uint64_t>(*v) : std::nullopt;
}

// The physical ranges of a device: mapping0, mapping1, ... up to the first
// one missing (as the kernel numbers them and libdaxctl reads them), else
// resource + size. Read here rather than through daxctl_mapping_get_first():
// libdaxctl (v76 to v81 at least) never frees a device's mapping list, not
// even in daxctl_unref(), so each full scan leaked 48 bytes per mapping, once
// at startup and again at every SIGHUP. test_discovery checks these ranges
// against `daxctl list -M`.
std::vector<PhysRange> read_ranges(const std::string& sysfs_path, std::uint64_t resource,
                                   std::uint64_t size, HostOs& os) {
    std::vector<PhysRange> ranges;
    for (int i = 0;; ++i) {
        std::string dir = fmt::format("{}/mapping{}", sysfs_path, i);
        auto start = read_u64(os, dir + "/start");
        if (!start)
            break;
        auto end = read_u64(os, dir + "/end");
        if (!end)
            break;
        if (*end >= *start)
            ranges.push_back(PhysRange{*start, *end});
    }
    std::sort(ranges.begin(), ranges.end());
    if (ranges.empty() && size > 0 && resource != 0 && resource != ~0ull)
        ranges.push_back({resource, resource + size - 1});
    return ranges;
}

} // namespace

DevMode read_dev_mode(const std::string& sysfs_path, HostOs& os) {
    // What libdaxctl's daxctl_dev_is_enabled() and daxctl_dev_get_memory()
    // decide, from the driver link alone: those resolve several deep paths
    // per device, which dominates a scan of thousands.
    // One readlink: it fails (ENOENT, or EINVAL for a non-link) when no
    // driver is bound.
    auto target = os.link_target(sysfs_path + "/driver");
    if (!target)
        return DevMode::disabled;
    return base_name(*target) == "kmem" ? DevMode::system_ram : DevMode::devdax;
}

Result<DaxDevice> read_dax_device(const std::string& name, HostOs& os) {
    DaxDevice d;
    d.name = name;
    if (std::sscanf(name.c_str(), "dax%d.%d", &d.region_id, &d.id) != 2)
        return make_error(EINVAL, fmt::format("{}: not a dax device name", name));
    auto real = os.real_path(fmt::format("{}/{}", kDaxBusDevices, name));
    if (!real)
        return make_error(ENOENT, fmt::format("{}: gone from the dax bus", name));
    d.set_region_path(parent_path(*real));
    if (base_name(*real) != name)
        return make_error(EIO, fmt::format("{}: its bus link leads to {}", name, *real));
    auto node = os.lstat_node(d.dev_path());
    if (!node)
        return make_error(ENOENT, fmt::format("no device node {}", d.dev_path()));
    d.devno = node->rdev;
    // As libdaxctl: size is required, the rest optional.
    auto size = read_u64(os, d.sysfs_path() + "/size");
    if (!size)
        return make_error(EIO, fmt::format("{}: its size attribute cannot be read", name));
    d.size = *size;
    d.align = read_u64(os, d.sysfs_path() + "/align").value_or(0);
    d.resource = read_u64(os, d.sysfs_path() + "/resource").value_or(0);
    auto node_text = os.read_file(d.sysfs_path() + "/target_node");
    auto node_num = node_text ? parse_i64(*node_text) : Result<std::int64_t>(Error{});
    d.target_node = node_num ? static_cast<int>(*node_num) : -1;

    d.mode = read_dev_mode(d.sysfs_path(), os);

    d.ranges = read_ranges(d.sysfs_path(), d.resource, d.size, os);
    return d;
}

Result<DaxctlScan> scan_dax_devices(HostOs& os) {
    daxctl_ctx* raw = nullptr;
    if (int rc = daxctl_new(&raw); rc < 0)
        return make_error(-rc, fmt::format("libdaxctl: cannot start: {}", std::strerror(-rc)));
    DaxctlCtx ctx(raw);
    daxctl_set_log_fn(ctx.get(), &quiet_log);

    DaxctlScan scan;
    std::set<std::string> seen;
    daxctl_region* region;
    daxctl_region_foreach(ctx.get(), region) {
        daxctl_dev* dev;
        daxctl_dev_foreach(region, dev) {
            DaxDevice d;
            d.name = daxctl_dev_get_devname(dev);
            d.region_id = daxctl_region_get_id(region);
            d.id = daxctl_dev_get_id(dev);
            d.devno = DevNumber{static_cast<unsigned>(daxctl_dev_get_major(dev)),
                                static_cast<unsigned>(daxctl_dev_get_minor(dev))};
            d.size = daxctl_dev_get_size(dev);
            d.align = daxctl_dev_get_align(dev);
            d.resource = daxctl_dev_get_resource(dev);
            d.target_node = daxctl_dev_get_target_node(dev);
            d.set_region_path(daxctl_region_get_path(region));
            d.ranges = read_ranges(d.sysfs_path(), d.resource, d.size, os);
            d.mode = read_dev_mode(d.sysfs_path(), os);
            seen.insert(d.name);
            scan.devices.push_back(std::move(d));
        }
    }

    // Cross-check with the bus itself.
    if (auto names = os.list_dir(kDaxBusDevices)) {
        for (const auto& name : *names) {
            if (seen.contains(name))
                continue;
            std::string path = fmt::format("{}/{}", kDaxBusDevices, name);
            std::string why;
            if (!os.real_path(path))
                why = "its sysfs entry vanished or is a dangling link (removed during the scan?)";
            else if (!os.exists("/dev/" + name))
                why = fmt::format("no device node /dev/{}", name);
            else if (!os.read_file(path + "/size"))
                why = "its size attribute cannot be read";
            else
                why = "libdaxctl could not read it";
            scan.unreadable.push_back({name, why});
        }
    }
    std::sort(scan.devices.begin(), scan.devices.end(), [](const DaxDevice& a, const DaxDevice& b) {
        return std::tie(a.region_id, a.id) < std::tie(b.region_id, b.id);
    });
    std::sort(scan.unreadable.begin(), scan.unreadable.end());
    return scan;
}

} // namespace tagmem
