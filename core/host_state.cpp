// SPDX-License-Identifier: Apache-2.0
#include "host_state.hpp"

#include "cdat.hpp"
#include "daxctl_scan.hpp"
#include "host_os.hpp"
#include "records.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <thread>

namespace tagmem {
namespace {

constexpr const char* kDaxBus = "/sys/bus/dax/devices";

// What a full scan reads of each device, read from the bus listing on a
// second thread while libdaxctl enumerates on the first: libdaxctl works
// alone (and, in add_dax_dev's duplicate check, in time quadratic in a
// region's devices), and none of tagmem's reads need its answers.
// libdaxctl's list stays authoritative: a reading is used only for a device
// libdaxctl lists, at the same sysfs path.
struct ReadAhead {
    std::unordered_map<std::string, Result<DeviceReading>> devices;
    std::map<std::string, Result<std::vector<Extent>>> extents; // of DC regions
};

ReadAhead read_ahead(HostOs& os, std::optional<unsigned> dax_major) {
    ReadAhead out;
    auto names = os.list_dir(kDaxBus);
    if (!names)
        return out;
    for (const auto& name : *names) {
        // One readlink: the bus link is relative into /sys/devices.
        auto path = os.link_target(fmt::format("{}/{}", kDaxBus, name));
        if (!path || base_name(*path) != name || parent_path(*path).empty())
            continue;
        DaxDevice d;
        d.name = name;
        d.set_region_path(parent_path(*path));
        auto reading = read_device(d, os, dax_major);
        if (reading && reading->dc_region && !out.extents.contains(d.region_path()))
            out.extents.emplace(d.region_path(), read_region_extents(d.region_path(), os));
        out.devices.emplace(name, std::move(reading));
    }
    return out;
}

} // namespace

HostState::HostState(HostOs& os) : os_(os), cache_(os) {}

HostState::Previous HostState::previous_of(const std::string& name) const {
    Previous p;
    if (auto it = devices_.find(name); it != devices_.end())
        p.device = it->second;
    if (auto it = rejected_.find(name); it != rejected_.end())
        p.rejection = it->second;
    return p;
}

void HostState::forget_device(const std::string& name, std::set<Uuid>& touched) {
    rejected_.erase(name);
    auto it = devices_.find(name);
    if (it == devices_.end())
        return;
    if (const auto& tag = it->second->tag) {
        touched.insert(*tag);
        if (auto slot = tags_.find(*tag); slot != tags_.end()) {
            slot->second.devices.erase_value(it->second);
            if (slot->second.devices.empty() && !slot->second.record)
                tags_.erase(slot);
        }
    }
    devices_.erase(it);
}

void HostState::add_device(std::shared_ptr<const ProbedDevice> shared, std::set<Uuid>& touched) {
    if (shared->tag) {
        touched.insert(*shared->tag);
        auto& devs = tags_[*shared->tag].devices;
        devs.insert(std::upper_bound(
                        devs.begin(), devs.end(), shared,
                        [](const auto& a, const auto& b) { return a->dev.name < b->dev.name; }),
                    shared);
    }
    devices_.emplace(shared->dev.name, std::move(shared)); // the key views its own name
}

void HostState::note_failure(const Error& why) {
    if (!first_failure_)
        first_failure_ = why;
}

void HostState::keep(const std::string& name, const Previous& previous, Error why,
                     std::set<Uuid>& touched) {
    forget_device(name, touched);
    note_failure(why);
    if (previous.device)
        add_device(previous.device, touched);
    else if (previous.rejection)
        rejected_[name] = *previous.rejection;
    else // never read: nothing to show but that it is there
        rejected_[name] = {name, fmt::format("cannot be read now (retrying): {}", why.message)};
    pending_[name] = std::move(why);
}

void HostState::load_device(const DaxDevice& listed, std::set<Uuid>& touched,
                            const Previous& previous, Result<DeviceReading>* early) {
    forget_device(listed.name, touched); // a device is loaded once: no stale slot entry
    pending_.erase(listed.name);
    // A reading taken ahead (see read_ahead) stands if it is of this very
    // sysfs device; a failed one is confirmed by reading again.
    const HandoffEntry* handoff = handoff_.match(listed);
    std::string enable_error;
    const DaxDevice dev = handoff ? enable_for_handoff(listed, *handoff, enable_error) : listed;
    if (dev.mode != listed.mode)
        early = nullptr; // read before it was enabled
    Result<DeviceReading> reading =
        early && *early && (*early)->probed.dev.sysfs_path() == dev.sysfs_path()
            ? std::move(*early)
            : read_device(dev, os_, cache_.dax_major());
    if (!reading) {
        if (is_transient(reading.error().code))
            return keep(dev.name, previous, reading.error(), touched);
        // A device of a DC region: the region's extents count (as offered
        // tags) even when this device is rejected. (An accepted device's
        // reading says so itself: complete_probe reads them.)
        if (is_dc_region_path(dev.region_path()) && !cache_.regions().contains(dev.region_path()))
            (void)cache_.extents(dev.region_path());
        rejected_[dev.name] = {dev.name, reading.error().message};
        return;
    }
    // libdaxctl's facts, with the size and the device number as read_device
    // checked them.
    const std::uint64_t size = reading->probed.dev.size;
    const DevNumber devno = reading->probed.dev.devno;
    reading->probed.dev = dev;
    reading->probed.dev.size = size;
    reading->probed.dev.devno = devno;
    if (handoff) {
        reading->notes.enable_error = std::move(enable_error);
        apply_handoff(*reading, *handoff, config_);
    }
    // A tag that came as CXL dynamic capacity (vm-args --cxl) carries its
    // tag itself; the item adds what the extent cannot: the host's name,
    // shareable flag and figures.
    if (!handoff && reading->probed.tag)
        if (const HandoffEntry* c = handoff_.match_cxl(*reading->probed.tag)) {
            reading->notes.handoff = *c;
            // The host's figures as the guest kernel has them: the device's
            // CDAT, when the host wrote it. A table that cannot be read
            // leaves the item's figures, and says why.
            if (c->cxl_cdat_from_host) {
                auto cdat = dc_region_cdat_performance(os_, reading->probed.dev.region_path());
                if (cdat && *cdat)
                    reading->notes.guest_cdat = **cdat;
                else if (!cdat)
                    reading->notes.warnings.push_back(
                        fmt::format("performance from the hand-off item, not the device's CDAT: {}",
                                    cdat.error().message));
            }
        }
    ProbedDevice p = complete_probe(std::move(*reading), cache_);
    if (p.notes->handoff) {
        // The host's performance data, value by value (the guest kernel's
        // CDAT first, then the hand-off item); the guest's own HMAT
        // data (none for a soft-reserved node so far) fills the gaps.
        Performance merged = *p.performance;
        const Performance& host = p.notes->handoff->host_performance;
        const Performance& cdat = p.notes->guest_cdat;
        for (auto field : {&Performance::read_latency_ns, &Performance::write_latency_ns,
                           &Performance::read_bandwidth_mbps, &Performance::write_bandwidth_mbps})
            if (cdat.*field)
                merged.*field = cdat.*field;
            else if (host.*field)
                merged.*field = host.*field;
        if (!merged.empty())
            p.performance = Shared(merged);
    }
    if (auto failed = cache_.take_failure()) {
        // Its extents or HMAT data failed to read: what was known of the
        // device stands; a device never seen is shown as read, and read
        // again at the retry.
        if (previous.device)
            return keep(dev.name, previous, *failed, touched);
        note_failure(*failed);
        pending_[dev.name] = *failed;
    }
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
    add_device(std::make_shared<const ProbedDevice>(std::move(p)), touched);
}

DaxDevice HostState::enable_for_handoff(const DaxDevice& dev, const HandoffEntry& entry,
                                        std::string& enable_error) {
    if (dev.mode != DevMode::disabled || !enable_tried_.insert(dev.sysfs_path()).second)
        return dev;
    // A transient failure (of the check or of the bind) is tried again at
    // the retry; any other is the device's answer until it changes.
    auto try_later = [&](const Error& why) {
        if (!is_transient(why.code))
            return;
        enable_tried_.erase(dev.sysfs_path());
        note_failure(why);
        pending_[dev.name] = why;
    };
    // Disabled by an administrator's `tagmem online` (between device_dax
    // and kmem, or left so): not undone, whenever this daemon started.
    auto marked = is_explicitly_online(entry.tag, os_);
    if (!marked || *marked) {
        enable_error = marked ? fmt::format("not enabled: tagmem online made tag {} system RAM "
                                            "({}/{})",
                                            entry.tag.str(), kExplicitOnlineDir, entry.tag.str())
                              : marked.error().message;
        if (!marked)
            try_later(marked.error());
        return dev;
    }
    if (auto ok = os_.enable_devdax(dev.name); !ok) {
        enable_error = ok.error().message;
        try_later(ok.error());
        return dev;
    }
    auto fresh = read_dax_device(dev.name, os_);
    if (!fresh) {
        enable_error = fmt::format("enabled for tag {}, but cannot be read again: {}",
                                   entry.tag.str(), fresh.error().message);
        return dev;
    }
    return *fresh;
}

void HostState::apply_handoff(DeviceReading& reading, const HandoffEntry& entry,
                              const Config& config) {
    ProbedDevice& p = reading.probed;
    // A tag the device carries itself (an NVDIMM namespace, a DCD extent)
    // is the platform's word on this very memory: it wins.
    if (p.tag && *p.tag != entry.tag) {
        reading.notes.warnings.push_back(
            fmt::format("the VM hand-off names this memory tag {}, but it carries tag {} of its "
                        "own, which wins",
                        entry.tag.str(), p.tag->str()));
        return;
    }
    // The hand-off wins over the guest's tagmem.conf match-range/match-node,
    // which names memory that carries no tag: this memory has the host's.
    if (!p.tag)
        if (auto configured = config_tag_for(p.dev, config);
            configured && *configured && **configured != entry.tag)
            reading.notes.warnings.push_back(
                fmt::format("tagmem.conf matches this memory to tag {}, but the VM hand-off "
                            "names it tag {}, which wins",
                            (*configured)->str(), entry.tag.str()));
    if (!p.tag) {
        p.tag = entry.tag;
        p.source = TagSource::handoff;
    }
    reading.notes.handoff = entry;
}

std::set<std::string> HostState::handed_over(const std::set<std::string>& names) {
    std::set<std::string> out;
    if (handoff_.entries.empty())
        return out;
    for (const auto& name : names) {
        auto dev = read_dax_device(name, os_);
        if (dev && handoff_.match(*dev))
            out.insert(name);
    }
    return out;
}

void HostState::read_handoff_item() {
    auto item = read_handoff(os_);
    if (item) {
        handoff_ = std::move(*item);
        handoff_error_.reset();
    } else if (item.error().code == ENODEV) {
        // qemu_fw_cfg is not bound: not loaded yet (its bind rescans, see
        // fs/uevent_plan.hpp), not a QEMU guest (nothing was read), or
        // unbound or unloaded since. QEMU's items do not change while the
        // guest runs, so an item read before stands: the driver going away
        // is no reason for the tags (whose memory stays) to vanish.
    } else if (is_transient(item.error().code)) {
        // Unreadable now (EMFILE...): what was read before stands.
        rescan_pending_ = true;
        note_failure(item.error());
    } else {
        handoff_ = {};
        // Shown as the reason of a rejection named after the item itself.
        std::string_view why = item.error().message;
        if (const std::string prefix = std::string(kHandoffItem) + ": "; why.starts_with(prefix))
            why.remove_prefix(prefix.size());
        handoff_error_ = std::string(why);
    }
}

void HostState::touch_tags_of(const std::vector<Extent>& extents, std::set<Uuid>& touched) {
    for (const auto& e : extents)
        if (e.tag)
            touched.insert(*e.tag);
}

TagDelta HostState::finish(const std::set<Uuid>& touched) {
    TagDelta delta = rebuild(touched);
    cache_.end_scan(); // the per-tag extent index is rebuilt on the next need
    for (auto& region : cache_.take_stale_regions())
        pending_regions_.insert(std::move(region));
    if (auto failed = cache_.take_failure())
        note_failure(*failed);
    if (!needs_retry())
        first_failure_.reset(); // the next failure is news again
    return delta;
}

TagDelta HostState::rebuild(const std::set<Uuid>& touched) {
    TagDelta delta;
    for (const auto& tag : touched) {
        auto slot = tags_.find(tag);
        std::vector<std::shared_ptr<const ProbedDevice>> devs;
        if (slot != tags_.end())
            devs = slot->second.devices.to_vector();
        std::vector<Extent> offered;
        if (devs.empty()) // offered: the extents of any DC region that carry it
            for (const auto& [region, extents] : cache_.regions()) {
                // Many lookups (a scan): index the regions; a few (an event):
                // a linear pass costs less than building ten indices.
                auto found = touched.size() > 64 ? cache_.extents_of(region, tag)
                                                 : cache_.extents_of_unindexed(region, tag);
                offered.insert(offered.end(), found.begin(), found.end());
            }
        if (devs.empty() && offered.empty()) {
            if (slot != tags_.end()) {
                if (slot->second.record)
                    delta.removals.push_back(tag);
                tags_.erase(slot);
            }
            pending_tags_.erase(tag);
            continue;
        }
        std::optional<Error> lookup_failure;
        TagRecord fresh =
            make_record(tag, std::move(devs), std::move(offered), config_, os_, &lookup_failure);
        auto& known = tags_[tag].record;
        if (lookup_failure) {
            // Who owns the tag could not be looked up: the access last
            // resolved stands (a new tag is root-only until the retry).
            note_failure(*lookup_failure);
            pending_tags_.insert(tag);
            if (known)
                fresh.access = known->access;
            if (known && *known == fresh)
                continue;
        } else {
            pending_tags_.erase(tag);
        }
        auto record = std::make_shared<const TagRecord>(std::move(fresh));
        known = record;
        delta.upserts.push_back(std::move(record));
    }
    return delta;
}

Result<TagDelta> HostState::rescan(const Config& config) {
    constexpr const char* kBus = "/sys/bus/dax/devices";
    auto major = os_.dax_char_major();
    if (!major) {
        rescan_pending_ = true;
        note_failure(major.error());
        return major.error();
    }
    ReadAhead ahead;
    std::thread reader;
    try {
        reader = std::thread([&ahead, this, major = *major] {
            try {
                ahead = read_ahead(os_, major);
            } catch (...) {
                ahead = {}; // out of memory: the scan reads each device itself
            }
        });
    } catch (const std::system_error&) {
        // No thread to be had: the scan reads each device itself.
    }
    auto scan = scan_dax_devices(os_);
    if (reader.joinable())
        reader.join();
    Status cleared = scan ? cache_.clear() : Status(scan.error());
    if (!cleared) {
        rescan_pending_ = true;
        note_failure(cleared.error());
        return cleared.error();
    }
    rescan_pending_ = !scan->complete;
    if (!scan->complete)
        note_failure(make_error(EAGAIN, fmt::format("cannot list {}", kBus)));
    std::set<Uuid> touched;
    for (auto& [tag, slot] : tags_) {
        touched.insert(tag);
        slot.devices.clear(); // the records stay: they say what to remove
    }
    // What was known, for the devices this scan fails to read.
    std::map<std::string, Previous> before;
    for (const auto& [name, d] : devices_)
        before[std::string(name)].device = d;
    for (const auto& [name, issue] : rejected_)
        before[name].rejection = issue;
    for (const auto& [name, why] : pending_)
        before.try_emplace(name);
    auto previous = [&](const std::string& name) {
        auto it = before.find(name);
        return it == before.end() ? Previous{} : it->second;
    };
    config_ = config;
    read_handoff_item();
    devices_.clear();
    rejected_.clear();
    pending_.clear();
    pending_regions_.clear();
    pending_tags_.clear();
    std::set<std::string> listed;
    for (const auto& issue : scan->unreadable) {
        rejected_[issue.device] = issue;
        listed.insert(issue.device);
    }
    for (auto& [region, extents] : ahead.extents)
        cache_.set_extents(region, std::move(extents));
    if (auto failed = cache_.take_failure())
        note_failure(*failed); // the region is retried (take_stale_regions)
    for (const auto& dev : scan->devices) {
        listed.insert(dev.name);
        auto early = ahead.devices.find(dev.name);
        load_device(dev, touched, previous(dev.name),
                    early == ahead.devices.end() ? nullptr : &early->second);
    }
    for (const auto& [name, why] : scan->failed) {
        listed.insert(name);
        keep(name, previous(name), why, touched);
    }
    // Known before, listed by neither libdaxctl nor the bus: removed only
    // when the bus confirms it is gone. A device libdaxctl failed to read
    // while the bus could not be listed (EMFILE) is still there.
    for (const auto& [name, was] : before) {
        if (listed.contains(name))
            continue;
        auto entry = os_.lstat_node(fmt::format("{}/{}", kBus, name));
        if (!entry && !is_transient(entry.error().code))
            continue;
        keep(name, was,
             entry ? make_error(EAGAIN, fmt::format("{}: on the bus, but not listed", name))
                   : entry.error(),
             touched);
    }
    // A region known before whose devices were not read now (kept, or
    // gone) is read again: its extents may still be offered. Should that
    // fail, what was known of it stands.
    for (const auto& region : cache_.regions_before())
        if (!cache_.regions().contains(region))
            (void)cache_.extents(region);
    for (const auto& [region, extents] : cache_.regions())
        if (extents)
            touch_tags_of(*extents, touched);
    // The regions' signatures now, so that the first change after the scan
    // is read incrementally too (an extent that came between the scan and
    // this readdir is read then, as its name is not in the cache).
    signatures_.clear();
    for (const auto& [region, extents] : cache_.regions()) {
        auto sig = signature_of(region);
        if (sig)
            signatures_[region] = std::move(*sig);
        else if (is_transient(sig.error().code))
            pending_regions_.insert(region);
    }
    TagDelta delta = finish(touched);
    cache_.end_rescan();
    return delta;
}

void HostState::refresh_one(const std::string& name, std::set<Uuid>& touched,
                            std::set<std::string>& regions) {
    Previous previous = previous_of(name);
    if (previous.device)
        regions.insert(previous.device->dev.region_path());
    auto dev = read_dax_device(name, os_);
    if (!dev) {
        if (is_transient(dev.error().code)) {
            // Nothing is known to have changed: all stays as it was.
            note_failure(dev.error());
            pending_[name] = dev.error();
            return;
        }
        forget_device(name, touched);
        pending_.erase(name);
        // Gone (ENOENT) or not a dax device at all (EINVAL: the dax bus also
        // announces regions and drivers): nothing to report.
        if (dev.error().code != ENOENT && dev.error().code != EINVAL)
            rejected_[name] = {name, dev.error().message};
        return;
    }
    // A device in a DC region we have not seen: its extents are read once.
    bool new_region = !cache_.regions().contains(dev->region_path());
    load_device(*dev, touched, previous);
    if (new_region && cache_.regions().contains(dev->region_path())) {
        if (const auto& extents = cache_.regions().at(dev->region_path()))
            touch_tags_of(*extents, touched);
    } else {
        regions.insert(dev->region_path());
    }
}

void HostState::refresh_into(const std::set<std::string>& names, std::set<Uuid>& touched) {
    std::set<std::string> regions;
    for (const auto& name : names)
        refresh_one(name, touched, regions);
    // The extents of the tags these devices carried or carry: a device
    // released with its extents vanishes in one step. Checking that they
    // still exist costs a stat each; only when one is gone is the region
    // listed (new extents are the periodic poll's to find).
    for (const auto& region : regions) {
        auto known = cache_.regions().find(region);
        if (known == cache_.regions().end())
            continue;
        if (!known->second) {
            poll_region(region, touched);
            continue;
        }
        std::vector<ExtentName> gone;
        for (const auto& e : *known->second) {
            if (!e.tag || !touched.contains(*e.tag))
                continue;
            auto entry = os_.lstat_node(region + "/" + e.name.str());
            if (entry)
                continue;
            if (is_transient(entry.error().code)) {
                note_failure(entry.error());
                pending_regions_.insert(region); // the retry lists it
                continue;
            }
            gone.push_back(e.name);
        }
        if (!gone.empty())
            drop_extents(region, gone, touched);
    }
}

TagDelta HostState::refresh(const std::set<std::string>& names) {
    std::set<Uuid> touched;
    refresh_into(names, touched);
    return finish(touched);
}

bool HostState::needs_retry() const {
    return rescan_pending_ || !pending_.empty() || !pending_regions_.empty() ||
           !pending_tags_.empty();
}

std::string HostState::retry_reason() const {
    return first_failure_ ? first_failure_->message : std::string("nothing failed");
}

TagDelta HostState::retry() {
    std::set<Uuid> touched;
    auto regions = std::exchange(pending_regions_, {});
    for (const auto& region : regions)
        if (cache_.regions().contains(region))
            poll_region(region, touched);
    std::set<std::string> names;
    for (const auto& [name, why] : pending_)
        names.insert(name);
    refresh_into(names, touched);
    touched.insert(pending_tags_.begin(), pending_tags_.end());
    return finish(touched);
}

std::vector<std::string> HostState::devices_under(const std::string& sysfs_path) const {
    std::vector<std::string> out;
    std::string prefix = sysfs_path + "/";
    for (const auto& [name, d] : devices_)
        if (d->dev.sysfs_path().starts_with(prefix))
            out.emplace_back(name);
    return out;
}

bool HostState::has_dc_regions() const {
    return !cache_.regions().empty();
}

void HostState::drop_extents(const std::string& region, const std::vector<ExtentName>& names,
                             std::set<Uuid>& touched) {
    // Released with their device: forget them without listing the region
    // (20,000 entries at 10,000 devices). The region's recorded signature
    // and link count are adjusted to match, so the next poll still notices
    // anything else that changed.
    std::vector<Extent> kept;
    for (const auto& e : *cache_.regions().at(region))
        if (std::find(names.begin(), names.end(), e.name) == names.end())
            kept.push_back(e);
        else if (e.tag)
            touched.insert(*e.tag);
    cache_.set_extents(region, std::move(kept));
    if (auto sig = signatures_.find(region); sig != signatures_.end())
        std::erase_if(sig->second, [&](const auto& entry) {
            return std::find(names.begin(), names.end(), entry.first) != names.end();
        });
    if (auto n = region_nlink_.find(region); n != region_nlink_.end() && n->second >= names.size())
        n->second -= names.size();
    // Devices of the region that carry those tags list fewer extents now.
    reload_devices(region, std::set<Uuid>(touched), touched);
}

void HostState::reload_devices(const std::string& region, const std::set<Uuid>& tags,
                               std::set<Uuid>& touched) {
    for (const auto& tag : tags) {
        auto it = tags_.find(tag);
        if (it == tags_.end())
            continue;
        // A copy: reloading changes the slot's device list.
        for (const auto& d : it->second.devices.to_vector())
            if (d->dev.region_path() == region)
                load_device(d->dev, touched, previous_of(d->dev.name));
    }
}

Result<HostState::Signature> HostState::signature_of(const std::string& region) {
    // The link count first: an extent added while the directory is read
    // then shows as a change at the next poll rather than being missed.
    if (auto node = os_.lstat_node(region))
        region_nlink_[region] = node->nlink;
    auto entries = os_.list_dir_inodes(region);
    if (!entries)
        return entries.error();
    Signature sig;
    for (const auto& [name, ino] : *entries)
        if (auto extent = ExtentName::parse(name))
            sig.emplace_back(*extent, ino);
    std::sort(sig.begin(), sig.end());
    sig.shrink_to_fit(); // kept until the next poll
    return sig;
}

void HostState::poll_region(const std::string& region, std::set<Uuid>& touched) {
    const auto& known = cache_.regions().at(region);
    auto signature = signature_of(region);
    if (!signature && is_transient(signature.error().code)) {
        // Not listed (EMFILE, say): its extents are what they were.
        note_failure(signature.error());
        pending_regions_.insert(region);
        return;
    }
    if (!signature) {
        // The region itself is gone: its extents with it.
        if (known)
            touch_tags_of(*known, touched);
        cache_.forget_region(region);
        signatures_.erase(region);
        region_nlink_.erase(region);
        return;
    }
    Signature now = std::move(*signature);
    auto sig = signatures_.find(region);
    if (sig != signatures_.end() && sig->second == now)
        return; // the common case: one readdir, nothing read
    std::vector<Extent> old_list = known ? *known : std::vector<Extent>{};
    Result<std::vector<Extent>> fresh = std::vector<Extent>{};
    if (sig == signatures_.end() || !known) {
        fresh = read_region_extents(region, os_);
        if (!fresh && is_transient(fresh.error().code) && known) {
            note_failure(fresh.error());
            pending_regions_.insert(region);
            return;
        }
    } else {
        // Only the extent directories that are new (by name and inode) are
        // read; the others are what they were. One extent arriving in a
        // region of 10,000 costs one readdir and three small reads.
        std::map<ExtentName, std::uint64_t> was(sig->second.begin(), sig->second.end());
        std::map<ExtentName, const Extent*> old_by_name;
        for (const auto& e : old_list)
            old_by_name[e.name] = &e;
        for (const auto& [name, ino] : now) {
            auto w = was.find(name);
            auto o = old_by_name.find(name);
            if (w != was.end() && w->second == ino && o != old_by_name.end()) {
                fresh->push_back(*o->second);
                continue;
            }
            auto e = read_extent(region, name.str(), os_);
            if (!e && is_transient(e.error().code)) {
                // Nothing is taken from a half-read region: the signature
                // stays the old one, so the retry reads the new extents.
                note_failure(e.error());
                pending_regions_.insert(region);
                return;
            }
            if (!e) {
                fresh = e.error();
                break;
            }
            fresh->push_back(std::move(*e));
        }
        if (fresh) {
            sort_extents(*fresh);
            fresh->shrink_to_fit();
        }
    }
    pending_regions_.erase(region);
    signatures_[region] = std::move(now);
    // Only tags whose extents differ are touched: a region can hold
    // thousands of devices, and one extent arriving concerns one tag.
    std::set<Uuid> changed;
    std::map<ExtentName, const Extent*> before, after;
    for (const auto& e : old_list)
        before[e.name] = &e;
    if (fresh)
        for (const auto& e : *fresh)
            after[e.name] = &e;
    auto note = [&](const Extent* e) {
        if (e && e->tag)
            changed.insert(*e->tag);
    };
    for (const auto& [name, e] : before) {
        auto it = after.find(name);
        if (it == after.end() || !(*it->second == *e)) {
            note(e);
            note(it == after.end() ? nullptr : it->second);
        }
    }
    for (const auto& [name, e] : after)
        if (!before.contains(name))
            note(e);
    cache_.set_extents(region, std::move(fresh));
    // Devices of this region that carry a changed tag list their extents.
    touched.insert(changed.begin(), changed.end());
    reload_devices(region, changed, touched);
}

TagDelta HostState::poll_extents() {
    // A region directory's link count is 2 + its subdirectories (kernfs and
    // tmpfs both keep it): an extent arriving or leaving changes it, and one
    // stat() tells. One arriving while another leaves does not, so every
    // tenth poll lists the regions in full.
    constexpr unsigned kFullEvery = 10;
    const bool full = ++polls_ % kFullEvery == 0;
    std::set<Uuid> touched;
    std::vector<std::string> regions;
    for (const auto& [region, extents] : cache_.regions())
        regions.push_back(region);
    for (const auto& region : regions) {
        if (!full && !pending_regions_.contains(region)) {
            auto node = os_.lstat_node(region);
            auto seen = region_nlink_.find(region);
            if (node && node->nlink != 0 && seen != region_nlink_.end() &&
                seen->second == node->nlink)
                continue;
        }
        poll_region(region, touched);
    }
    return finish(touched);
}

ScanResult HostState::snapshot() const {
    ScanResult s;
    s.config_errors = config_.errors;
    for (const auto& [tag, slot] : tags_)
        if (slot.record)
            s.tags.push_back(*slot.record);
    std::sort(s.tags.begin(), s.tags.end(),
              [](const auto& a, const auto& b) { return a.tag < b.tag; });
    for (const auto& [name, d] : devices_)
        if (!d->tag)
            s.untagged.push_back(
                {std::string(name), d->dev.size, d->dev.mode, d->dev.target_node, d->dev.ranges});
    std::sort(s.untagged.begin(), s.untagged.end(),
              [](const auto& a, const auto& b) { return a.device < b.device; });
    for (const auto& [name, issue] : rejected_)
        s.rejected.push_back(issue);
    // The hand-off item: malformed, or naming memory this guest lacks.
    if (handoff_error_)
        s.rejected.push_back({kHandoffItem, *handoff_error_});
    for (const auto& e : handoff_.entries)
        if (std::none_of(devices_.begin(), devices_.end(), [&](const auto& d) {
                return d.second->notes->handoff && d.second->notes->handoff->tag == e.tag;
            }))
            s.rejected.push_back(
                {kHandoffItem, fmt::format("tag {}: no dax device has its range on guest "
                                           "node {} (is dax_hmem loaded, and memmap= given?)",
                                           e.tag.str(), e.guest_node)});
    return s;
}

std::size_t HostState::tag_count() const {
    return std::count_if(tags_.begin(), tags_.end(),
                         [](const auto& t) { return t.second.record != nullptr; });
}

} // namespace tagmem
