// SPDX-License-Identifier: Apache-2.0
#include "records.hpp"

#include "host_os.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>

namespace tagmem {
namespace {

bool matches(const TagConfig& c, const DaxDevice& d) {
    if (c.match_range) {
        if (d.ranges.size() != 1 || d.ranges.front() != *c.match_range)
            return false;
    }
    if (c.match_node && d.target_node != *c.match_node)
        return false;
    return c.has_match();
}

Access resolve_access(const TagConfig* c, HostOs& os, std::optional<Error>* failure) {
    Access a;
    if (!c)
        return a;
    // load_config already rejected names that do not resolve; a user removed
    // since then falls back to root, never to "everyone". So does one that
    // could not be looked up (NSS out of file descriptors, say), which the
    // caller is told of, to keep what it knew.
    auto note = [&](const Error& e) {
        if (failure && !*failure && is_transient(e.code))
            *failure = e;
    };
    if (c->owner) {
        if (auto uid = os.user_id(*c->owner)) {
            a.uid = *uid;
            a.owner = *c->owner;
        } else {
            note(uid.error());
        }
    }
    if (c->group) {
        if (auto gid = os.group_id(*c->group)) {
            a.gid = *gid;
            a.group = *c->group;
        } else {
            note(gid.error());
        }
    }
    if (c->mode)
        a.mode = *c->mode;
    return a;
}

} // namespace

Result<std::optional<Uuid>> config_tag_for(const DaxDevice& dev, const Config& config) {
    std::vector<const TagConfig*> hits;
    for (const auto& [tag, c] : config.tags)
        if (matches(c, dev))
            hits.push_back(&c);
    if (hits.size() > 1)
        return make_error(EEXIST, fmt::format("matched by more than one configured tag ({} and {})",
                                              hits[0]->tag.str(), hits[1]->tag.str()));
    if (hits.empty())
        return std::optional<Uuid>{};
    return std::optional<Uuid>{hits[0]->tag};
}

static bool same_health(const TagRecord& a, const TagRecord& b) {
    const bool da = a.health && !a.health->ok(), db = b.health && !b.health->ok();
    return da == db && (!da || *a.health == *b.health);
}

bool TagRecord::operator==(const TagRecord& o) const {
    auto same_devices = [&] {
        return std::equal(devices.begin(), devices.end(), o.devices.begin(), o.devices.end(),
                          [](const auto& a, const auto& b) { return a == b || *a == *b; });
    };
    return tag == o.tag && name == o.name && source == o.source && state == o.state &&
           reason == o.reason && offered_extents == o.offered_extents && shareable == o.shareable &&
           shareable_from == o.shareable_from && access == o.access && same_devices() &&
           release_requested == o.release_requested && same_health(*this, o);
}

TagRecord make_record(const Uuid& tag, std::vector<std::shared_ptr<const ProbedDevice>> devs,
                      std::vector<Extent> offered_extents, const Config& config, HostOs& os,
                      std::optional<Error>* lookup_failure) {
    TagRecord r;
    r.tag = tag;
    std::sort(devs.begin(), devs.end(), [](const auto& a, const auto& b) {
        return std::tie(a->dev.region_id, a->dev.id) < std::tie(b->dev.region_id, b->dev.id);
    });
    r.devices = std::move(devs);
    r.source = r.devices.empty() ? TagSource::dcd : r.devices.front()->source;
    // A DCD tag is capacity the fabric may share between hosts: until
    // tagmem.conf says `shareable = no` it is taken as shareable, so that
    // `online = allow` alone never hands other hosts' data to this host's
    // page allocator (issue 19, docs/online.md). NVDIMM and configured
    // memory are this host's unless configured otherwise.
    r.shareable = r.source == TagSource::dcd;
    const TagConfig* c = config.find(tag);
    if (c) {
        r.name = c->name;
        if (c->shareable) {
            r.shareable = *c->shareable;
            r.shareable_from = ShareableFrom::config;
        }
    }
    r.access = resolve_access(c, os, lookup_failure);
    // A VM guest's tag: its name and shareable flag are the host's, whatever
    // the guest's tagmem.conf says (docs/vm.md); owner, group and mode stay
    // the guest's own.
    if (r.devices.size() == 1 && r.devices[0]->notes->handoff &&
        r.devices[0]->notes->handoff->tag == tag) {
        const HandoffEntry& h = *r.devices[0]->notes->handoff;
        r.name = h.name;
        r.shareable = h.shareable;
        r.shareable_from = ShareableFrom::handoff;
    }

    if (r.devices.empty()) {
        r.state = TagState::offered;
        r.offered_extents = std::move(offered_extents);
        r.reason = "DCD extents carry this tag, but no dax device has claimed them yet";
    } else if (r.devices.size() > 1) {
        std::string names;
        for (const auto& d : r.devices)
            names += (names.empty() ? "" : ", ") + d->dev.name;
        r.state = TagState::conflict;
        r.reason = fmt::format("{} devices claim this tag: {}", r.devices.size(), names);
    } else if (r.devices[0]->dev.mode == DevMode::system_ram) {
        r.state = TagState::system_ram;
        r.reason = fmt::format("{} is online as system RAM: onlining zeroed it and the kernel "
                               "owns it; it is not this tag's data",
                               r.devices[0]->dev.name);
    } else if (r.devices[0]->dev.mode == DevMode::disabled) {
        r.state = TagState::disabled;
        r.reason =
            fmt::format("{} has no driver bound (not in devdax mode)", r.devices[0]->dev.name);
        if (!r.devices[0]->notes->enable_error.empty())
            r.reason += fmt::format("; enabling it as devdax failed: {}",
                                    r.devices[0]->notes->enable_error);
    }
    return r;
}

const TagRecord* ScanResult::find(const Uuid& tag) const {
    auto it = std::lower_bound(tags.begin(), tags.end(), tag,
                               [](const TagRecord& r, const Uuid& t) { return r.tag < t; });
    return it != tags.end() && it->tag == tag ? &*it : nullptr;
}

} // namespace tagmem
