// SPDX-License-Identifier: Apache-2.0
#include "cxl_poison.hpp"

#include "host_os.hpp"
#include "sysfs_value.hpp"
#include "tag_record.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <limits>

namespace tagmem {
namespace {

constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();

bool all_of(std::string_view s, std::string_view allowed) {
    return s.find_first_not_of(allowed) == std::string_view::npos;
}

// %llu / %u: digits, no sign, no leading zero (but "0").
std::optional<std::uint64_t> decimal(std::string_view s) {
    if (s.empty() || !all_of(s, "0123456789") || (s.size() > 1 && s[0] == '0'))
        return std::nullopt;
    std::uint64_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size())
        return std::nullopt;
    return v;
}

bool named(std::string_view s, std::string_view prefix) {
    return s.starts_with(prefix) && decimal(s.substr(prefix.size())).has_value();
}

} // namespace

bool CxlPoisonTracker::apply(const PoisonRecord& r, std::int64_t now) {
    auto dev = memdevs_.find(r.memdev);
    if (r.type == PoisonTraceType::clear) {
        if (dev == memdevs_.end())
            return false;
        bool changed = false;
        const std::uint64_t last = r.dpa + (r.length - 1);
        for (auto it = dev->second.begin(); it != dev->second.end();) {
            const std::uint64_t k_last = it->first + (it->second.length - 1);
            if (it->first <= last && r.dpa <= k_last) {
                changed |= !it->second.hpa.empty();
                it = dev->second.erase(it);
            } else {
                ++it;
            }
        }
        return changed;
    }
    if (dev == memdevs_.end()) {
        if (memdevs_.size() >= kMaxMemdevs) {
            ++dropped_;
            return false;
        }
        dev = memdevs_.emplace(r.memdev, Memdev{}).first;
    }
    auto& known = dev->second;
    auto it = known.find(r.dpa);
    if (it == known.end()) {
        if (known.size() >= kMaxRecords) {
            ++dropped_;
            return false;
        }
        known.emplace(r.dpa, Known{r.length, r.hpa, now, listing_.contains(r.memdev)});
        return !r.hpa.empty();
    }
    it->second.listed = true;
    if (it->second.length == r.length && it->second.hpa == r.hpa)
        return false;
    const bool visible = !it->second.hpa.empty() || !r.hpa.empty();
    it->second.length = r.length;
    it->second.hpa = r.hpa; // a region made or torn down since: where it is seen now
    return visible;
}

void CxlPoisonTracker::begin_listing(const std::vector<std::string>& memdevs) {
    for (const auto& name : memdevs) {
        listing_.insert(name);
        if (auto dev = memdevs_.find(name); dev != memdevs_.end())
            for (auto& [dpa, k] : dev->second)
                k.listed = false;
    }
}

bool CxlPoisonTracker::end_listing() {
    bool changed = false;
    for (const auto& name : listing_) {
        auto dev = memdevs_.find(name);
        if (dev == memdevs_.end())
            continue;
        for (auto it = dev->second.begin(); it != dev->second.end();) {
            if (!it->second.listed) {
                changed |= !it->second.hpa.empty();
                it = dev->second.erase(it);
            } else {
                ++it;
            }
        }
        if (dev->second.empty())
            memdevs_.erase(dev);
    }
    listing_.clear();
    return changed;
}

void CxlPoisonTracker::abort_listing() {
    // Records first seen during the aborted listing are kept (they were
    // reported); those not seen again stay too.
    listing_.clear();
}

bool CxlPoisonTracker::set_incomplete(const std::string& memdev, std::string why) {
    auto [it, added] = incomplete_.try_emplace(memdev, why);
    if (!added && it->second == why)
        return false;
    it->second = std::move(why);
    return true;
}

bool CxlPoisonTracker::set_complete(const std::string& memdev) {
    return incomplete_.erase(memdev) > 0;
}

bool CxlPoisonTracker::keep_only(const std::set<std::string>& names) {
    bool changed = false;
    for (auto dev = memdevs_.begin(); dev != memdevs_.end();) {
        if (names.contains(dev->first)) {
            ++dev;
            continue;
        }
        for (const auto& [dpa, k] : dev->second)
            changed |= !k.hpa.empty();
        dev = memdevs_.erase(dev);
    }
    // A memdev gone has nothing left to list.
    for (auto it = incomplete_.begin(); it != incomplete_.end();) {
        if (!it->first.empty() && !names.contains(it->first)) {
            it = incomplete_.erase(it);
            changed = true;
        } else {
            ++it;
        }
    }
    return changed;
}

std::size_t CxlPoisonTracker::record_count() const {
    std::size_t n = 0;
    for (const auto& [name, dev] : memdevs_)
        n += dev.size();
    return n;
}

TagHealth CxlPoisonTracker::health_of(const TagRecord& record) const {
    TagHealth h;
    const auto* d = record.device();
    if (!d || d->dev.ranges.empty())
        return h;
    for (const auto& [name, dev] : memdevs_)
        for (const auto& [dpa, k] : dev)
            for (const auto& range : k.hpa)
                for (const auto& part : physical_to_data(d->dev.ranges, range))
                    h.bad.push_back({part.start, part.length, k.first_seen});
    std::sort(h.bad.begin(), h.bad.end());
    if (incomplete_.empty())
        return h;
    // Which memdev backs which tag is not followed (docs/health.md): an
    // incomplete list concerns every tag in CXL memory.
    bool in_cxl = !cxl_ranges_;
    if (cxl_ranges_)
        for (const auto& r : *cxl_ranges_)
            in_cxl = in_cxl || !physical_to_data(d->dev.ranges, r).empty();
    if (!in_cxl)
        return h;
    for (const auto& [memdev, why] : incomplete_)
        h.incomplete.push_back(why);
    return h;
}

namespace {

// The bus's memdevs, sorted, and which can list their poison; nothing written.
PoisonListing find_memdevs(HostOs& os, const std::string& bus_dir) {
    PoisonListing t;
    auto names = os.list_dir(bus_dir);
    if (!names) {
        if (is_gone(names.error().code))
            t.bus_read = true; // no CXL bus: no memdev
        else
            t.failed.push_back(names.error().message);
        return t;
    }
    t.bus_read = true;
    std::sort(names->begin(), names->end());
    for (const auto& name : *names) {
        if (name.size() > 16 || !named(name, "mem"))
            continue;
        t.all.push_back(name);
        if (os.exists(fmt::format("{}/{}/trigger_poison_list", bus_dir, name)))
            t.listed.push_back(name); // listable; trigger() says whether it was
    }
    return t;
}

Status trigger(HostOs& os, const std::string& bus_dir, const std::string& memdev) {
    return os.write_file(fmt::format("{}/{}/trigger_poison_list", bus_dir, memdev), "1\n");
}

} // namespace

Result<std::vector<ByteRange>> cxl_region_ranges(HostOs& os, const std::string& bus_dir) {
    std::vector<ByteRange> out;
    auto names = os.list_dir(bus_dir);
    if (!names) {
        if (is_gone(names.error().code))
            return out; // no CXL bus: no region
        return names.error();
    }
    for (const auto& name : *names) {
        if (name.size() > 16 || !named(name, "region"))
            continue;
        auto start = os.read_file(fmt::format("{}/{}/resource", bus_dir, name));
        auto size = start ? os.read_file(fmt::format("{}/{}/size", bus_dir, name)) : start;
        if (!start || !size) {
            const auto& e = !start ? start.error() : size.error();
            if (is_gone(e.code))
                continue; // went while listed
            return e;
        }
        auto s = parse_u64(*start);
        auto n = parse_u64(*size);
        if (!s || !n)
            return make_error(EINVAL,
                              fmt::format("{}/{}: resource or size unreadable", bus_dir, name));
        // A region without memory yet (size 0, resource ULLONG_MAX) holds no tag.
        if (*n == 0 || *s > kMax - (*n - 1))
            continue;
        out.push_back({*s, *n});
    }
    return out;
}

std::string trace_instance_name(std::string_view mount_point) {
    while (mount_point.size() > 1 && mount_point.ends_with('/'))
        mount_point.remove_suffix(1);
    if (mount_point == "/run/tagmem")
        return "tagmem";
    std::string name = "tagmem-";
    std::string_view p = mount_point;
    while (p.starts_with('/'))
        p.remove_prefix(1);
    for (char c : p) {
        const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                           (c >= '0' && c <= '9') || c == '_' || c == '.';
        if (plain)
            name += c;
        else if (c == '/')
            name += '-';
        else
            name += fmt::format("_x{:02x}", static_cast<unsigned char>(c));
    }
    if (name.size() <= 128)
        return name;
    std::uint64_t h = 0xcbf29ce484222325ull; // FNV-1a: a short name, the same at each start
    for (char c : mount_point)
        h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
    return fmt::format("tagmem-{:016x}", h);
}

PoisonListingResult list_poison(HostOs& os, PoisonSource& source, CxlPoisonTracker& tracker,
                                const std::function<bool(const PoisonBatch&)>& take,
                                const std::string& bus_dir, int attempts) {
    PoisonListingResult out;
    auto regions = cxl_region_ranges(os, bus_dir);
    tracker.set_cxl_ranges(regions ? std::optional(std::move(*regions)) : std::nullopt);
    // Reads the trace dry, bounded (16 rounds of a bounded read each).
    // Returns whether it was read dry with nothing lost.
    bool ended = false; // the trace ended or failed: nothing more is read
    auto drain = [&]() {
        if (ended)
            return false;
        bool whole = true;
        for (int round = 0; round < 16; ++round) {
            auto b = source.read();
            out.changed |= take(b);
            // A pipe that ended or failed says nothing of what was listed.
            whole = whole && b.lost == 0 && !b.error && !b.ended;
            ended = ended || b.ended || b.error;
            if (b.empty() || b.ended || b.error)
                return whole;
        }
        return false; // not dry: a flood, or a list longer than the bound
    };
    // What came before the listings, as it came (added, not listed).
    if (!drain())
        out.changed |= tracker.set_incomplete("", "CXL poison: trace events were lost; "
                                                  "records may be missing");
    PoisonListing found = find_memdevs(os, bus_dir);
    out.listing.all = found.all;
    out.listing.bus_read = found.bus_read;
    out.listing.failed = found.failed;
    if (found.bus_read) // memdevs gone take their records along
        out.changed |= tracker.keep_only(std::set<std::string>(found.all.begin(), found.all.end()));
    else // an unreadable source is never "ok": the tags in CXL memory say so
        out.changed |= tracker.set_incomplete(
            "", fmt::format("CXL poison: the memory devices could not be listed ({}); records "
                            "may be missing",
                            found.failed.empty() ? "no reason given" : found.failed.front()));
    bool all_whole = found.bus_read;
    for (const auto& name : found.listed) {
        bool whole = false;
        std::string why;
        for (int attempt = 0; attempt < attempts && !whole && !ended; ++attempt) {
            tracker.begin_listing({name});
            if (auto s = trigger(os, bus_dir, name); !s) {
                tracker.abort_listing();
                why = s.error().message;
                break;
            }
            // The kernel emitted the list inside the write: it is in the
            // trace now, and only it (another writer aside).
            whole = drain();
            if (whole)
                out.changed |= tracker.end_listing();
            else
                tracker.abort_listing();
        }
        if (whole) {
            out.listing.listed.push_back(name);
            out.changed |= tracker.set_complete(name);
            continue;
        }
        all_whole = false;
        if (!why.empty())
            out.listing.failed.push_back(why);
        out.incomplete.push_back(name);
        out.changed |= tracker.set_incomplete(
            name, fmt::format("CXL poison of {}: {}; its last complete list is shown", name,
                              why.empty() ? "trace events were lost while listing it"
                                          : "its poison list could not be read"));
    }
    // Every listable memdev's list read whole: what was lost before is
    // known again (a memdev that cannot list has nothing to lose but
    // injected records, which a list would not show either).
    if (all_whole)
        out.changed |= tracker.set_complete("");
    return out;
}

} // namespace tagmem
