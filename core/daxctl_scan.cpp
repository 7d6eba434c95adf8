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

// An attribute libdaxctl treats as optional: nullopt when absent or not a
// number (as libdaxctl takes it), an error when it could not be read.
Result<std::optional<std::uint64_t>> read_u64(HostOs& os, const std::string& path) {
    auto text = os.read_file(path);
    if (!text) {
        if (is_transient(text.error().code))
            return text.error();
        return std::optional<std::uint64_t>();
    }
    auto v = parse_u64(*text);
    return v ? std::optional<std::uint64_t>(*v) : std::nullopt;
}

// The physical ranges of a device: mapping0, mapping1, ... up to the first
// one missing (as the kernel numbers them and libdaxctl reads them), else
// resource + size. Read here rather than through daxctl_mapping_get_first():
// libdaxctl (v76 to v81 at least) never frees a device's mapping list, not
// even in daxctl_unref(), so each full scan leaked 48 bytes per mapping, once
// at startup and again at every SIGHUP. test_discovery checks these ranges
// against `daxctl list -M`. A mapping that fails to read for another reason
// than its absence fails the whole: a short list would change the ranges a
// configured tag is matched by.
Result<std::vector<PhysRange>> read_ranges(const std::string& sysfs_path, std::uint64_t resource,
                                           std::uint64_t size, HostOs& os) {
    std::vector<PhysRange> ranges;
    for (int i = 0;; ++i) {
        std::string dir = fmt::format("{}/mapping{}", sysfs_path, i);
        auto start = read_u64(os, dir + "/start");
        if (!start)
            return start.error();
        if (!*start)
            break;
        auto end = read_u64(os, dir + "/end");
        if (!end)
            return end.error();
        if (!*end)
            break;
        if (**end >= **start)
            ranges.push_back(PhysRange{**start, **end});
    }
    std::sort(ranges.begin(), ranges.end());
    if (ranges.empty() && size > 0 && resource != 0 && resource != ~0ull)
        ranges.push_back({resource, resource + size - 1});
    return ranges;
}

// libdaxctl reads target_node, align and resource as optional and, when a
// read fails for any reason (EMFILE included), reports -1, 0, or 0 or what
// /proc/iomem says (all ones when that fails too), without a word. Where it
// reports such a value, the attribute is read again here, so that a failed
// read is told from an absent attribute. A healthy host costs nothing: the
// values are rarely those.
Status recheck_fallbacks(DaxDevice& d, HostOs& os) {
    auto recheck = [&](const char* attr, std::uint64_t& field, bool fallback) -> Status {
        if (!fallback)
            return Ok{};
        auto v = read_u64(os, d.sysfs_path() + "/" + attr);
        if (!v)
            return v.error();
        if (*v)
            field = **v;
        return Ok{};
    };
    if (d.target_node == -1) {
        auto text = os.read_file(d.sysfs_path() + "/target_node");
        if (!text && is_transient(text.error().code))
            return text.error();
        if (text)
            if (auto n = parse_i64(*text))
                d.target_node = static_cast<int>(*n);
    }
    if (auto ok = recheck("align", d.align, d.align == 0); !ok)
        return ok;
    return recheck("resource", d.resource, d.resource == 0 || d.resource == ~0ull);
}

// What scan_dax_devices adds to each of libdaxctl's devices.
Status complete_device(DaxDevice& d, HostOs& os) {
    if (auto ok = recheck_fallbacks(d, os); !ok)
        return ok;
    auto ranges = read_ranges(d.sysfs_path(), d.resource, d.size, os);
    if (!ranges)
        return ranges.error();
    d.ranges = std::move(*ranges);
    auto mode = read_dev_mode(d.sysfs_path(), os);
    if (!mode)
        return mode.error();
    d.mode = *mode;
    return Ok{};
}

// Why libdaxctl left out a device the bus lists: the reason to report, or
// the failed read that kept us from knowing (then it is retried).
Result<std::string> why_dropped(HostOs& os, const std::string& name) {
    std::string path = fmt::format("{}/{}", kDaxBusDevices, name);
    auto verdict = [](const Error& e, std::string why) -> Result<std::string> {
        if (is_transient(e.code))
            return e;
        return why;
    };
    if (auto real = os.real_path(path); !real)
        return verdict(real.error(), "its sysfs entry vanished or is a dangling link (removed "
                                     "during the scan?)");
    if (auto node = os.lstat_node("/dev/" + name); !node)
        return verdict(node.error(), fmt::format("no device node /dev/{}", name));
    if (auto size = os.read_file(path + "/size"); !size)
        return verdict(size.error(), "its size attribute cannot be read");
    // Readable now: libdaxctl failed to read it a moment ago, perhaps for
    // want of a file descriptor.
    return make_error(EAGAIN, fmt::format("{}: libdaxctl could not read it", name));
}

} // namespace

Result<DevMode> read_dev_mode(const std::string& sysfs_path, HostOs& os) {
    // What libdaxctl's daxctl_dev_is_enabled() and daxctl_dev_get_memory()
    // decide, from the driver link alone: those resolve several deep paths
    // per device, which dominates a scan of thousands.
    // One readlink: it fails (ENOENT, or EINVAL for a non-link) when no
    // driver is bound; any other failure says nothing about the driver.
    auto target = os.link_target(sysfs_path + "/driver");
    if (!target) {
        if (is_transient(target.error().code))
            return target.error();
        return DevMode::disabled;
    }
    return base_name(*target) == "kmem" ? DevMode::system_ram : DevMode::devdax;
}

Result<DaxDevice> read_dax_device(const std::string& name, HostOs& os) {
    DaxDevice d;
    d.name = name;
    if (std::sscanf(name.c_str(), "dax%d.%d", &d.region_id, &d.id) != 2)
        return make_error(EINVAL, fmt::format("{}: not a dax device name", name));
    auto real = os.real_path(fmt::format("{}/{}", kDaxBusDevices, name));
    if (!real) {
        if (is_transient(real.error().code))
            return real.error();
        return make_error(ENOENT, fmt::format("{}: gone from the dax bus", name));
    }
    d.set_region_path(parent_path(*real));
    if (base_name(*real) != name)
        return make_error(ENODEV, fmt::format("{}: its bus link leads to {}", name, *real));
    auto node = os.lstat_node(d.dev_path());
    if (!node) {
        if (is_transient(node.error().code))
            return node.error();
        return make_error(ENOENT, fmt::format("no device node {}", d.dev_path()));
    }
    d.devno = node->rdev;
    // As libdaxctl: size is required, the rest optional.
    auto size = read_u64(os, d.sysfs_path() + "/size");
    if (!size)
        return size.error();
    if (!*size)
        return make_error(ENODEV, fmt::format("{}: its size attribute cannot be read", name));
    d.size = **size;
    auto align = read_u64(os, d.sysfs_path() + "/align");
    auto resource = read_u64(os, d.sysfs_path() + "/resource");
    if (!align)
        return align.error();
    if (!resource)
        return resource.error();
    d.align = align->value_or(0);
    d.resource = resource->value_or(0);
    auto node_text = os.read_file(d.sysfs_path() + "/target_node");
    if (!node_text && is_transient(node_text.error().code))
        return node_text.error();
    auto node_num = node_text ? parse_i64(*node_text) : Result<std::int64_t>(Error{});
    d.target_node = node_num ? static_cast<int>(*node_num) : -1;

    auto mode = read_dev_mode(d.sysfs_path(), os);
    if (!mode)
        return mode.error();
    d.mode = *mode;
    auto ranges = read_ranges(d.sysfs_path(), d.resource, d.size, os);
    if (!ranges)
        return ranges.error();
    d.ranges = std::move(*ranges);
    return d;
}

Result<std::vector<DaxDevice>> daxctl_enumerate() {
    daxctl_ctx* raw = nullptr;
    if (int rc = daxctl_new(&raw); rc < 0)
        return make_error(-rc, fmt::format("libdaxctl: cannot start: {}", std::strerror(-rc)));
    DaxctlCtx ctx(raw);
    daxctl_set_log_fn(ctx.get(), &quiet_log);

    std::vector<DaxDevice> out;
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
            out.push_back(std::move(d));
        }
    }
    return out;
}

Status daxctl_enable_devdax(const std::string& name) {
    daxctl_ctx* raw = nullptr;
    if (int rc = daxctl_new(&raw); rc < 0)
        return make_error(-rc, fmt::format("libdaxctl: cannot start: {}", std::strerror(-rc)));
    DaxctlCtx ctx(raw);
    daxctl_set_log_fn(ctx.get(), &quiet_log);
    daxctl_region* region;
    daxctl_region_foreach(ctx.get(), region) {
        daxctl_dev* dev;
        daxctl_dev_foreach(region, dev) {
            if (name != daxctl_dev_get_devname(dev))
                continue;
            if (daxctl_dev_is_enabled(dev))
                return Ok{};
            if (int rc = daxctl_dev_enable_devdax(dev); rc < 0)
                return make_error(-rc, fmt::format("libdaxctl: enabling {} as devdax: {}", name,
                                                   std::strerror(-rc)));
            if (!daxctl_dev_is_enabled(dev))
                return make_error(ENXIO, fmt::format("{} is still disabled after enabling", name));
            return Ok{};
        }
    }
    return make_error(ENOENT, fmt::format("libdaxctl does not list {}", name));
}

Result<DaxctlScan> scan_dax_devices(HostOs& os) {
    auto listed = os.daxctl_devices();
    if (!listed)
        return listed.error();
    DaxctlScan scan;
    std::set<std::string> seen;
    for (auto& d : *listed) {
        seen.insert(d.name);
        // Only a failed read fails here (an absent attribute has a value).
        if (auto ok = complete_device(d, os); !ok)
            scan.failed.emplace(d.name, ok.error());
        else
            scan.devices.push_back(std::move(d));
    }

    // Cross-check with the bus itself.
    auto names = os.list_dir(kDaxBusDevices);
    if (!names)
        scan.complete = is_gone(names.error().code); // no dax bus: no devices
    else
        for (const auto& name : *names) {
            if (seen.contains(name))
                continue;
            // libdaxctl dropped it: find out why, through reads that tell a
            // failure from an absence.
            auto why = why_dropped(os, name);
            if (!why)
                scan.failed.emplace(name, why.error());
            else
                scan.unreadable.push_back({name, *why});
        }
    std::sort(scan.devices.begin(), scan.devices.end(), [](const DaxDevice& a, const DaxDevice& b) {
        return std::tie(a.region_id, a.id) < std::tie(b.region_id, b.id);
    });
    std::sort(scan.unreadable.begin(), scan.unreadable.end());
    return scan;
}

} // namespace tagmem
