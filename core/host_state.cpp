// SPDX-License-Identifier: Apache-2.0
#include "host_state.hpp"

#include "daxctl_scan.hpp"
#include "host_os.hpp"
#include "records.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace tagmem {

HostState::HostState(HostOs& os) : os_(os), cache_(os) {}

void HostState::forget_device(const std::string& name, std::set<Uuid>& touched) {
    rejected_.erase(name);
    auto it = devices_.find(name);
    if (it == devices_.end())
        return;
    if (it->second.tag) {
        touched.insert(*it->second.tag);
        auto& names = by_tag_[*it->second.tag];
        names.erase(name);
        if (names.empty())
            by_tag_.erase(*it->second.tag);
    }
    devices_.erase(it);
}

void HostState::load_device(const DaxDevice& dev, std::set<Uuid>& touched) {
    // A device with a uuid attribute sits in a DC region, whose extents count
    // (as offered tags) even when this device is rejected.
    if (!cache_.regions().contains(dev.region_path) && os_.exists(dev.sysfs_path + "/uuid"))
        (void)cache_.extents(dev.region_path);
    auto probed = probe_device(dev, os_, cache_);
    if (!probed) {
        rejected_[dev.name] = {dev.name, probed.error().message};
        return;
    }
    ProbedDevice p = std::move(*probed);
    if (!p.tag) {
        auto configured = config_tag_for(p.dev, config_);
        if (!configured) {
            rejected_[dev.name] = {dev.name, configured.error().message};
            return;
        }
        if (*configured) {
            p.tag = **configured;
            p.source = TagSource::config;
        }
    }
    if (p.tag) {
        touched.insert(*p.tag);
        by_tag_[*p.tag].insert(dev.name);
    }
    devices_.insert_or_assign(dev.name, std::move(p));
}

void HostState::index_extents(const std::string& region, const std::vector<Extent>* old_list,
                              const std::vector<Extent>* new_list, std::set<Uuid>& touched) {
    (void)region;
    if (old_list)
        for (const auto& e : *old_list)
            if (e.tag) {
                touched.insert(*e.tag);
                auto& m = extents_[*e.tag];
                m.erase(e.name);
                if (m.empty())
                    extents_.erase(*e.tag);
            }
    if (new_list)
        for (const auto& e : *new_list)
            if (e.tag) {
                touched.insert(*e.tag);
                extents_[*e.tag].insert_or_assign(e.name, e);
            }
}

TagDelta HostState::rebuild(const std::set<Uuid>& touched) {
    TagDelta delta;
    for (const auto& tag : touched) {
        std::vector<ProbedDevice> devs;
        if (auto it = by_tag_.find(tag); it != by_tag_.end())
            for (const auto& name : it->second)
                devs.push_back(devices_.at(name));
        std::vector<Extent> offered;
        if (devs.empty())
            if (auto it = extents_.find(tag); it != extents_.end())
                for (const auto& [name, e] : it->second)
                    offered.push_back(e);
        if (devs.empty() && offered.empty()) {
            if (records_.erase(tag))
                delta.removals.push_back(tag);
            continue;
        }
        std::sort(offered.begin(), offered.end(),
                  [](const Extent& a, const Extent& b) { return a.name < b.name; });
        auto record = std::make_shared<const TagRecord>(
            make_record(tag, std::move(devs), std::move(offered), config_, os_));
        records_[tag] = record;
        delta.upserts.push_back(std::move(record));
    }
    return delta;
}

Result<TagDelta> HostState::rescan(const Config& config) {
    auto scan = scan_dax_devices(os_);
    if (!scan)
        return scan.error();
    std::set<Uuid> touched;
    for (const auto& [tag, rec] : records_)
        touched.insert(tag);
    config_ = config;
    cache_.clear();
    devices_.clear();
    rejected_.clear();
    by_tag_.clear();
    extents_.clear();
    for (const auto& issue : scan->unreadable)
        rejected_[issue.device] = issue;
    for (const auto& dev : scan->devices)
        load_device(dev, touched);
    for (const auto& [region, extents] : cache_.regions())
        if (extents)
            index_extents(region, nullptr, &*extents, touched);
    return rebuild(touched);
}

TagDelta HostState::refresh_device(const std::string& name) {
    std::set<Uuid> touched;
    forget_device(name, touched);
    auto dev = read_dax_device(name, os_);
    if (dev) {
        // A device appearing in a DC region we have not seen: read it once.
        bool new_region = !cache_.regions().contains(dev->region_path);
        load_device(*dev, touched);
        if (new_region && cache_.regions().contains(dev->region_path)) {
            const auto& extents = cache_.regions().at(dev->region_path);
            if (extents)
                index_extents(dev->region_path, nullptr, &*extents, touched);
        }
    } else if (dev.error().code != ENOENT) {
        rejected_[name] = {name, dev.error().message};
    }
    return rebuild(touched);
}

std::vector<std::string> HostState::devices_under(const std::string& sysfs_path) const {
    std::vector<std::string> out;
    std::string prefix = sysfs_path + "/";
    for (const auto& [name, d] : devices_)
        if (d.dev.sysfs_path.starts_with(prefix))
            out.push_back(name);
    return out;
}

bool HostState::has_dc_regions() const {
    return !cache_.regions().empty();
}

TagDelta HostState::poll_extents() {
    std::set<Uuid> touched;
    std::vector<std::string> regions;
    for (const auto& [region, extents] : cache_.regions())
        regions.push_back(region);
    for (const auto& region : regions) {
        const auto& known = cache_.regions().at(region);
        auto names = os_.list_dir(region);
        if (!names) {
            // The region itself is gone: its devices' uevents do the rest.
            if (known)
                index_extents(region, &*known, nullptr, touched);
            cache_.forget_region(region);
            continue;
        }
        std::set<std::string> now;
        for (const auto& n : *names)
            if (n.starts_with("extent"))
                now.insert(n);
        std::set<std::string> before;
        if (known)
            for (const auto& e : *known)
                before.insert(e.name);
        if (known && now == before)
            continue; // the common case: one readdir, nothing read
        auto fresh = read_region_extents(region, os_);
        const std::vector<Extent>* old_list = known ? &*known : nullptr;
        std::vector<Extent> old_copy = old_list ? *old_list : std::vector<Extent>{};
        index_extents(region, old_list ? &old_copy : nullptr, fresh ? &*fresh : nullptr, touched);
        cache_.set_extents(region, std::move(fresh));
        // Devices of this region that carry a touched tag list their extents.
        for (const auto& tag : std::set<Uuid>(touched)) {
            auto it = by_tag_.find(tag);
            if (it == by_tag_.end())
                continue;
            for (const auto& name : std::set<std::string>(it->second)) {
                auto d = devices_.find(name);
                if (d != devices_.end() && d->second.dev.region_path == region) {
                    DaxDevice dev = d->second.dev;
                    forget_device(name, touched);
                    load_device(dev, touched);
                }
            }
        }
    }
    return rebuild(touched);
}

ScanResult HostState::snapshot() const {
    ScanResult s;
    s.config_errors = config_.errors;
    for (const auto& [tag, rec] : records_)
        s.tags.push_back(*rec);
    for (const auto& [name, d] : devices_)
        if (!d.tag)
            s.untagged.push_back({name, d.dev.size, d.dev.mode, d.dev.target_node, d.dev.ranges});
    for (const auto& [name, issue] : rejected_)
        s.rejected.push_back(issue);
    return s;
}

} // namespace tagmem
