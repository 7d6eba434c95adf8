// SPDX-License-Identifier: Apache-2.0
#include "health.hpp"

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

// The kernel's %llu: digits only, no sign, no leading zero (but "0").
std::optional<std::uint64_t> kernel_decimal(std::string_view text) {
    if (text.empty() || text.find_first_not_of("0123456789") != std::string_view::npos ||
        (text.size() > 1 && text[0] == '0'))
        return std::nullopt;
    std::uint64_t v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end != text.data() + text.size())
        return std::nullopt;
    return v;
}

// The last byte of a non-empty range, without overflow.
std::uint64_t last_of(ByteRange r) {
    return r.start + (r.length - 1);
}

bool is_region_name(std::string_view name) {
    constexpr std::string_view prefix = "region";
    return name.starts_with(prefix) && kernel_decimal(name.substr(prefix.size())).has_value();
}

} // namespace

Result<BadblocksList> parse_badblocks(std::string_view text, std::size_t page_size) {
    BadblocksList list;
    auto& out = list.ranges;
    if (page_size > 0 && text.size() >= page_size - 1) {
        // Cut at the page (sysfs hands out PAGE_SIZE - 1 bytes at most): the
        // complete lines are the first of the list, the rest is unknown.
        list.truncated = true;
        auto last_nl = text.rfind('\n');
        text = last_nl == std::string_view::npos ? std::string_view() : text.substr(0, last_nl + 1);
    }
    std::size_t line_no = 0;
    while (!text.empty()) {
        ++line_no;
        auto nl = text.find('\n');
        if (nl == std::string_view::npos)
            return make_error(EINVAL,
                              fmt::format("badblocks line {}: no newline (truncated?)", line_no));
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl + 1);
        auto space = line.find(' ');
        auto sector =
            space == std::string_view::npos ? std::nullopt : kernel_decimal(line.substr(0, space));
        auto count =
            space == std::string_view::npos ? std::nullopt : kernel_decimal(line.substr(space + 1));
        if (!sector || !count)
            return make_error(EINVAL, fmt::format("badblocks line {}: not '<sector> <count>': '{}'",
                                                  line_no, line));
        if (*count == 0)
            return make_error(EINVAL, fmt::format("badblocks line {}: empty range", line_no));
        out.push_back({*sector, *count});
    }
    return list;
}

std::optional<ByteRange> region_range_to_physical(std::uint64_t region_start,
                                                  std::uint64_t region_size, SectorRange bad) {
    if (region_size == 0 || bad.count == 0)
        return std::nullopt;
    // Offsets within the region; anything past 2^64 is past the region.
    if (bad.sector > kMax / kBadblockSectorSize)
        return std::nullopt;
    const std::uint64_t offset = bad.sector * kBadblockSectorSize;
    if (offset >= region_size)
        return std::nullopt;
    const std::uint64_t room = region_size - offset;
    const std::uint64_t length =
        bad.count > room / kBadblockSectorSize ? room : bad.count * kBadblockSectorSize;
    // The region itself must fit the address space: start + size - 1 <= max.
    if (region_start > kMax - (region_size - 1))
        return std::nullopt;
    return ByteRange{region_start + offset, length};
}

std::vector<ByteRange> physical_to_data(const SmallVec<PhysRange>& ranges, ByteRange bad) {
    std::vector<ByteRange> out;
    if (bad.length == 0)
        return out;
    const std::uint64_t bad_last = last_of(bad);
    std::uint64_t data_offset = 0;
    for (const auto& r : ranges) {
        if (r.end < r.start)
            continue; // not a range; contributes nothing to the data
        const std::uint64_t lo = std::max(r.start, bad.start);
        const std::uint64_t hi = std::min(r.end, bad_last);
        if (lo <= hi) {
            ByteRange part{data_offset + (lo - r.start), hi - lo + 1};
            if (!out.empty() && out.back().start + out.back().length == part.start)
                out.back().length += part.length;
            else
                out.push_back(part);
        }
        data_offset += r.end - r.start + 1;
    }
    std::sort(out.begin(), out.end());
    // Ranges listed out of data order could leave touching parts apart.
    std::vector<ByteRange> merged;
    for (const auto& p : out) {
        if (!merged.empty() && merged.back().start + merged.back().length >= p.start) {
            auto end = std::max(merged.back().start + merged.back().length, p.start + p.length);
            merged.back().length = end - merged.back().start;
        } else {
            merged.push_back(p);
        }
    }
    return merged;
}

std::string iso8601_utc(std::int64_t seconds) {
    std::time_t t = static_cast<std::time_t>(seconds);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                       tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

HealthTracker::HealthTracker(HostOs& os, std::string bus_dir)
    : os_(os), bus_dir_(std::move(bus_dir)) {}

std::string HealthTracker::badblocks_path(const std::string& region) const {
    return fmt::format("{}/{}/badblocks", bus_dir_, region);
}

std::vector<std::string> HealthTracker::regions() const {
    std::vector<std::string> out;
    for (const auto& [name, r] : regions_)
        out.push_back(name);
    return out;
}

Result<HealthTracker::Region> HealthTracker::read_place(const std::string& name) {
    Region r;
    const std::string dir = bus_dir_ + "/" + name;
    auto start = os_.read_file(dir + "/resource");
    if (!start)
        return start.error();
    auto size = os_.read_file(dir + "/size");
    if (!size)
        return size.error();
    auto s = parse_u64(*start);
    auto n = parse_u64(*size);
    if (!s)
        return make_error(EINVAL, fmt::format("{}/resource: {}", dir, s.error().message));
    if (!n)
        return make_error(EINVAL, fmt::format("{}/size: {}", dir, n.error().message));
    r.start = *s;
    r.size = *n;
    return r;
}

bool HealthTracker::apply(const std::string& name, Region& region, const std::string& text,
                          std::int64_t now) {
    auto parsed = parse_badblocks(text);
    if (!parsed) {
        failures_[name] = fmt::format("{}: {}", badblocks_path(name), parsed.error().message);
        return false; // the last known ranges stand
    }
    failures_.erase(name);
    region.truncated = parsed->truncated;
    std::vector<Known> fresh;
    for (const auto& s : parsed->ranges) {
        auto phys = region_range_to_physical(region.start, region.size, s);
        if (!phys)
            continue;
        // First seen: the earliest of the known ranges it overlaps (the
        // kernel merges a new bad range with its neighbours), else now.
        std::int64_t first = now;
        for (const auto& k : region.bad)
            if (k.phys.start <= last_of(*phys) && phys->start <= last_of(k.phys))
                first = std::min(first, k.first_seen);
        fresh.push_back({*phys, first});
    }
    std::sort(fresh.begin(), fresh.end(),
              [](const Known& a, const Known& b) { return a.phys < b.phys; });
    auto same = [](const Known& a, const Known& b) {
        return a.phys == b.phys && a.first_seen == b.first_seen;
    };
    bool changed =
        !std::equal(fresh.begin(), fresh.end(), region.bad.begin(), region.bad.end(), same);
    region.bad = std::move(fresh);
    return changed;
}

bool HealthTracker::update_region(const std::string& name, const Result<std::string>& text,
                                  std::int64_t now) {
    auto it = regions_.find(name);
    if (it == regions_.end())
        return false; // a rescan learns its place first
    if (!text) {
        if (is_gone(text.error().code)) {
            failures_.erase(name);
            bool had = !it->second.bad.empty();
            regions_.erase(it);
            return had;
        }
        failures_[name] = fmt::format("{}: {}", badblocks_path(name), text.error().message);
        return false;
    }
    return apply(name, it->second, *text, now);
}

bool HealthTracker::rescan(std::int64_t now) {
    bool changed = false;
    auto names = os_.list_dir(bus_dir_);
    if (!names) {
        if (!is_gone(names.error().code)) {
            failures_[bus_dir_] = names.error().message;
            return false; // nothing known changes
        }
        names = std::vector<std::string>{}; // no nd bus: no NVDIMM region
    }
    failures_.erase(bus_dir_);
    std::map<std::string, Region> next;
    for (const auto& name : *names) {
        if (!is_region_name(name))
            continue;
        auto old = regions_.find(name);
        auto place = read_place(name);
        if (!place) {
            if (is_gone(place.error().code))
                continue; // vanished while listed, or not a memory region
            failures_[name] = place.error().message;
            if (old != regions_.end())
                next.emplace(name, std::move(old->second));
            continue;
        }
        Region r = std::move(*place);
        const bool moved =
            old == regions_.end() || old->second.start != r.start || old->second.size != r.size;
        if (!moved)
            r.bad = std::move(old->second.bad);
        auto text = os_.read_file(badblocks_path(name));
        if (!text) {
            if (is_gone(text.error().code)) {
                // No badblocks (not a pmem region): nothing to know.
                changed |= !r.bad.empty();
                failures_.erase(name);
                continue;
            }
            failures_[name] = fmt::format("{}: {}", badblocks_path(name), text.error().message);
            changed |= moved && old != regions_.end() && !old->second.bad.empty();
            next.emplace(name, std::move(r));
            continue;
        }
        if (moved && old != regions_.end() && !old->second.bad.empty())
            changed = true;
        changed |= apply(name, r, *text, now);
        next.emplace(name, std::move(r));
    }
    for (const auto& [name, r] : regions_)
        if (!next.contains(name) && !r.bad.empty())
            changed = true;
    for (auto it = failures_.begin(); it != failures_.end();)
        it = (it->first == bus_dir_ || next.contains(it->first)) ? std::next(it)
                                                                 : failures_.erase(it);
    regions_ = std::move(next);
    return changed;
}

TagHealth HealthTracker::health_of(const TagRecord& record) const {
    TagHealth h;
    const auto* d = record.device();
    if (!d || d->dev.ranges.empty())
        return h;
    for (const auto& [name, region] : regions_) {
        for (const auto& k : region.bad)
            for (const auto& part : physical_to_data(d->dev.ranges, k.phys))
                h.bad.push_back({part.start, part.length, k.first_seen});
        const bool failed = failures_.contains(name);
        if (!region.truncated && !failed)
            continue;
        // Does the tag's memory lie in this region? Then what is unknown of
        // the region's list may be in the tag.
        auto whole = region_range_to_physical(region.start, region.size,
                                              {0, region.size / kBadblockSectorSize});
        if (!whole || physical_to_data(d->dev.ranges, *whole).empty())
            continue;
        h.incomplete.push_back(
            failed
                ? fmt::format("{}/badblocks could not be read; its last known list is shown", name)
                : fmt::format("{}/badblocks is longer than the page the kernel shows; "
                              "only its first {} ranges are known",
                              name, region.bad.size()));
    }
    std::sort(h.bad.begin(), h.bad.end());
    std::sort(h.incomplete.begin(), h.incomplete.end());
    return h;
}

} // namespace tagmem
