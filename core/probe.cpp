// SPDX-License-Identifier: Apache-2.0
#include "probe.hpp"

#include "host_os.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <type_traits>
#include <utility>

namespace tagmem {
namespace {

// An attribute that must be present and well formed.
template <typename Parse>
auto parse_attr(const std::string& path, std::string_view text, Parse parse)
    -> decltype(parse(std::string_view())) {
    auto value = parse(text);
    if (!value)
        return make_error(value.error().code, fmt::format("{}: {}", path, value.error().message));
    return value;
}

template <class Parse>
auto read_attr(HostOs& os, const std::string& path, Parse parse)
    -> decltype(parse(std::string_view())) {
    auto text = os.read_file(path);
    if (!text)
        return text.error();
    return parse_attr(path, *text, parse);
}

// An attribute that may be absent or garbled (nullopt), unless reading it
// failed (is_transient).
template <class Parse>
auto read_optional(HostOs& os, const std::string& path, Parse parse)
    -> Result<std::optional<std::remove_cvref_t<decltype(*parse(std::string_view()))>>> {
    using Value = std::optional<std::remove_cvref_t<decltype(*parse(std::string_view()))>>;
    auto v = read_attr(os, path, parse);
    if (!v) {
        if (is_transient(v.error().code))
            return v.error();
        return Value();
    }
    return Value(*v);
}

Status read_nvdimm_tag(ProbedDevice& p, DeviceNotes& notes, HostOs& os) {
    // region path = the nd_dax device; its `namespace` names the namespace.
    const std::string& nd_dax = p.dev.region_path();
    auto ns = os.read_file(nd_dax + "/namespace");
    if (!ns) {
        if (is_transient(ns.error().code))
            return ns.error();
        return Ok{};
    }
    std::string name(trim_attr(*ns));
    if (!is_numbered_name(name, "namespace"))
        return make_error(EINVAL,
                          fmt::format("{}/namespace: not a namespace name: '{}'", nd_dax, name));
    notes.namespace_name = name;
    // Label-less NVDIMMs have "io" namespaces without a uuid attribute: such
    // memory carries no tag, and only the configuration can name it.
    std::string uuid_path = fmt::format("{}/{}/uuid", parent_path(nd_dax), name);
    auto tag = read_attr(os, uuid_path, parse_uuid_attr);
    if (!tag && tag.error().code == ENOENT)
        return Ok{};
    if (!tag)
        return make_error(tag.error().code, fmt::format("namespace uuid: {}", tag.error().message));
    if (!tag->is_nil()) {
        p.tag = *tag;
        p.source = TagSource::nvdimm;
    }
    auto info = read_optional(os, nd_dax + "/uuid", parse_uuid_attr);
    if (!info)
        return info.error();
    if (*info && !(*info)->is_nil())
        notes.infoblock_uuid = **info;
    return Ok{};
}

} // namespace

bool is_dc_region_path(std::string_view region_path) {
    auto name = base_name(region_path);
    if (!name.starts_with("dax_region"))
        return false;
    name.remove_prefix(std::string_view("dax_region").size());
    return !name.empty() && name.find_first_not_of("0123456789") == std::string_view::npos;
}

Result<DevNumber> verify_device_node(const DaxDevice& dev, HostOs& os,
                                     std::optional<unsigned> dax_major) {
    auto sys_devno = read_attr(os, dev.sysfs_path() + "/dev", parse_dev_number);
    if (!sys_devno)
        return make_error(sys_devno.error().code,
                          fmt::format("device number unreadable: {}", sys_devno.error().message));
    auto node = os.lstat_node(dev.dev_path());
    if (!node)
        return make_error(node.error().code, node.error().message);
    if (node->type != NodeType::char_device)
        return make_error(ENODEV, fmt::format("{} is not a character device", dev.dev_path()));
    if (node->rdev != *sys_devno)
        return make_error(ENODEV, fmt::format("{} is {}:{} but sysfs says {}:{}", dev.dev_path(),
                                              node->rdev.major, node->rdev.minor, sys_devno->major,
                                              sys_devno->minor));
    if (!dax_major || node->rdev.major != *dax_major)
        return make_error(ENODEV, fmt::format("{} has major {}, which is not the kernel's dax "
                                              "major ({})",
                                              dev.dev_path(), node->rdev.major,
                                              dax_major ? fmt::to_string(*dax_major) : "none"));
    // The kernel's index of character devices must name this very device,
    // and the device must sit on the dax bus.
    auto indexed =
        os.link_target(fmt::format("/sys/dev/char/{}:{}", sys_devno->major, sys_devno->minor));
    if (!indexed && is_transient(indexed.error().code))
        return indexed.error();
    if (!indexed || *indexed != dev.sysfs_path())
        return make_error(ENODEV, fmt::format("/sys/dev/char/{}:{} does not lead to {}",
                                              sys_devno->major, sys_devno->minor, dev.name));
    auto subsystem = os.link_target(dev.sysfs_path() + "/subsystem");
    if (!subsystem && is_transient(subsystem.error().code))
        return subsystem.error();
    if (!subsystem || *subsystem != "/sys/bus/dax")
        return make_error(ENODEV, fmt::format("{}:{} does not belong to the dax bus",
                                              sys_devno->major, sys_devno->minor));
    return *sys_devno;
}

Result<Extent> read_extent(const std::string& region_path, const std::string& name, HostOs& os) {
    auto parsed = ExtentName::parse(name);
    if (!parsed)
        return make_error(EINVAL, fmt::format("{}/{}: not an extent name", region_path, name));
    std::string dir = region_path + "/" + name;
    Extent e;
    e.name = *parsed;
    auto offset = read_attr(os, dir + "/offset", parse_u64);
    auto length = read_attr(os, dir + "/length", parse_u64);
    if (!offset)
        return offset.error();
    if (!length)
        return length.error();
    e.offset = *offset;
    e.length = *length;
    // The uuid file is absent for an untagged extent.
    auto text = os.read_file(dir + "/uuid");
    if (!text && text.error().code != ENOENT)
        return text.error();
    if (text) {
        auto tag = parse_attr(dir + "/uuid", *text, parse_tag_attr);
        if (!tag)
            return tag.error();
        e.tag = *tag;
    }
    return e;
}

void sort_extents(std::vector<Extent>& extents) {
    std::sort(extents.begin(), extents.end(),
              [](const Extent& a, const Extent& b) { return a.offset < b.offset; });
}

Result<std::vector<Extent>> read_region_extents(const std::string& region_path, HostOs& os) {
    std::vector<Extent> extents;
    auto names = os.list_dir(region_path);
    if (!names)
        return names.error();
    for (const auto& name : *names) {
        if (!ExtentName::parse(name))
            continue;
        auto e = read_extent(region_path, name, os);
        if (!e)
            return e.error();
        extents.push_back(std::move(*e));
    }
    sort_extents(extents);
    extents.shrink_to_fit(); // kept for the daemon's life: growth slack was 30 B a tag
    return extents;
}

Result<Performance> read_node_performance(int node, HostOs& os) {
    Performance perf;
    if (node < 0)
        return perf;
    auto base = fmt::format("/sys/devices/system/node/node{}/access0/initiators/", node);
    for (auto [attr, field] : {std::pair{"read_latency", &perf.read_latency_ns},
                               std::pair{"write_latency", &perf.write_latency_ns},
                               std::pair{"read_bandwidth", &perf.read_bandwidth_mbps},
                               std::pair{"write_bandwidth", &perf.write_bandwidth_mbps}}) {
        auto v = read_optional(os, base + attr, parse_u64);
        if (!v)
            return v.error();
        *field = *v;
    }
    return perf;
}

ScanCache::ScanCache(HostOs& os) : os_(os) {
    // Unreadable: no device verifies until a clear() reads it.
    if (auto major = os.dax_char_major())
        dax_major_ = *major;
    else
        failure_ = major.error();
}

void ScanCache::set_extents(const std::string& region_path, Result<std::vector<Extent>> extents) {
    // A failed read: what was known before the last clear() stands.
    if (!extents && is_transient(extents.error().code)) {
        if (!failure_)
            failure_ = extents.error();
        stale_regions_.insert(region_path);
        if (auto before = extents_before_.find(region_path); before != extents_before_.end())
            extents = before->second;
    }
    extents_.insert_or_assign(region_path, std::move(extents));
    by_tag_.erase(region_path);
}

void ScanCache::forget_region(const std::string& region_path) {
    extents_.erase(region_path);
    by_tag_.erase(region_path);
}

std::vector<Extent> ScanCache::extents_of_unindexed(const std::string& region_path,
                                                    const Uuid& tag) {
    if (by_tag_.contains(region_path))
        return extents_of(region_path, tag);
    std::vector<Extent> out;
    if (const auto& all = extents(region_path))
        for (const auto& e : *all)
            if (e.tag == tag)
                out.push_back(e);
    return out;
}

std::vector<Extent> ScanCache::extents_of(const std::string& region_path, const Uuid& tag) {
    // Indexed once per region: a region of n devices would otherwise cost
    // n * n comparisons per scan.
    auto it = by_tag_.find(region_path);
    if (it == by_tag_.end()) {
        std::unordered_map<Uuid, std::vector<Extent>> index;
        if (const auto& all = extents(region_path))
            for (const auto& e : *all)
                if (e.tag)
                    index[*e.tag].push_back(e);
        it = by_tag_.emplace(region_path, std::move(index)).first;
    }
    auto found = it->second.find(tag);
    return found == it->second.end() ? std::vector<Extent>{} : found->second;
}

const Shared<Performance>& ScanCache::performance(int node) {
    auto it = performance_.find(node);
    if (it == performance_.end()) {
        auto perf = read_node_performance(node, os_);
        if (!perf) {
            // Not cached: the retry this asks for reads it again.
            if (!failure_)
                failure_ = perf.error();
            static const Shared<Performance> none;
            auto before = performance_before_.find(node);
            return before != performance_before_.end() ? before->second : none;
        }
        // No data (most hosts): no allocation, the empty value stands in.
        it = performance_
                 .emplace(node, perf->empty() ? Shared<Performance>{} : Shared<Performance>(*perf))
                 .first;
    }
    return it->second;
}

std::vector<std::string> ScanCache::regions_before() const {
    std::vector<std::string> out;
    for (const auto& [region, extents] : extents_before_)
        out.push_back(region);
    return out;
}

Status ScanCache::clear() {
    auto major = os_.dax_char_major();
    if (!major)
        return major.error();
    dax_major_ = *major;
    performance_before_ = std::move(performance_);
    extents_before_.clear();
    for (auto& [region, extents] : extents_)
        if (extents)
            extents_before_.emplace(region, std::move(*extents));
    performance_.clear();
    extents_.clear();
    by_tag_.clear();
    failure_.reset();
    stale_regions_.clear();
    return Ok{};
}

const Result<std::vector<Extent>>& ScanCache::extents(const std::string& region_path) {
    auto it = extents_.find(region_path);
    if (it == extents_.end()) {
        set_extents(region_path, read_region_extents(region_path, os_));
        it = extents_.find(region_path);
    }
    return it->second;
}

Result<DeviceReading> read_device(const DaxDevice& dev, HostOs& os,
                                  std::optional<unsigned> dax_major) {
    auto devno = verify_device_node(dev, os, dax_major);
    if (!devno)
        return devno.error();

    // libdaxctl reads an empty or garbled size as 0; a device whose size
    // cannot be trusted is not presented.
    auto size = read_attr(os, dev.sysfs_path() + "/size", parse_u64);
    if (!size)
        return make_error(size.error().code,
                          fmt::format("size unreadable: {}", size.error().message));

    DeviceReading r;
    ProbedDevice& p = r.probed;
    DeviceNotes& notes = r.notes;
    p.dev = dev;
    p.dev.size = *size;
    // The number just verified against /dev and sysfs: the node made for
    // the tag's data is made with this one, never an earlier reading.
    p.dev.devno = *devno;
    auto numa = read_optional(os, dev.sysfs_path() + "/numa_node", parse_i64);
    if (!numa)
        return numa.error();
    if (*numa)
        p.numa_node = static_cast<int>(**numa);

    // 1. CXL DCD: the device's own uuid attribute. Since the DCD series
    // (v11) every dax device has one, reading the null UUID unless tagged DC
    // capacity backs it, so its presence says nothing; a null UUID is "no
    // tag", and the device may still carry one of another source.
    auto uuid_text = os.read_file(dev.sysfs_path() + "/uuid");
    if (!uuid_text && uuid_text.error().code != ENOENT)
        return make_error(uuid_text.error().code,
                          fmt::format("malformed tag: {}", uuid_text.error().message));
    if (uuid_text) {
        auto tag = parse_attr(dev.sysfs_path() + "/uuid", *uuid_text, parse_tag_attr);
        if (!tag)
            return make_error(tag.error().code,
                              fmt::format("malformed tag: {}", tag.error().message));
        if (*tag) {
            p.tag = **tag;
            p.source = TagSource::dcd;
        }
    }
    // The CXL DAX region device is named dax_regionN (the kernel's
    // "dax_region%d"); NVDIMM dax regions live in an nd_dax device (daxR.N)
    // and hmem ones in hmem.N. Only a DC region has extents, read from the
    // name alone: no syscall for the thousands of devices of other kinds.
    r.dc_region = is_dc_region_path(dev.region_path());
    if (!p.tag && !r.dc_region) {
        // 2. NVDIMM: the namespace behind the nd_dax device.
        if (auto ok = read_nvdimm_tag(p, notes, os); !ok)
            return make_error(ok.error().code,
                              fmt::format("malformed tag: {}", ok.error().message));
    }

    return r;
}

ProbedDevice complete_probe(DeviceReading reading, ScanCache& cache) {
    ProbedDevice& p = reading.probed;
    const std::string& region = p.dev.region_path();
    if (reading.dc_region) {
        const auto& extents = cache.extents(region);
        if (!extents)
            reading.notes.warnings.push_back(
                fmt::format("extents unreadable: {}", extents.error().message));
        else if (p.tag)
            p.extents = cache.extents_of(region, *p.tag);
    }
    p.performance = cache.performance(p.dev.target_node);
    if (!reading.notes.empty())
        p.notes = Shared(std::move(reading.notes));
    return std::move(p);
}

} // namespace tagmem
