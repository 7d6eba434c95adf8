// SPDX-License-Identifier: Apache-2.0
#include "cxl_poison.hpp"

#include "host_os.hpp"
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

// 0x%llx / 0x%x: "0x", lowercase hex digits, no leading zero (but "0x0").
std::optional<std::uint64_t> hex(std::string_view s, std::uint64_t max = kMax) {
    if (!s.starts_with("0x"))
        return std::nullopt;
    s.remove_prefix(2);
    if (s.empty() || !all_of(s, "0123456789abcdef") || (s.size() > 1 && s[0] == '0'))
        return std::nullopt;
    std::uint64_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 16);
    if (ec != std::errc() || end != s.data() + s.size() || v > max)
        return std::nullopt;
    return v;
}

bool named(std::string_view s, std::string_view prefix) {
    return s.starts_with(prefix) && decimal(s.substr(prefix.size())).has_value();
}

// %pU: 8-4-4-4-12 lowercase hex digits.
bool is_uuid(std::string_view s) {
    if (s.size() != 36)
        return false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !all_of(s.substr(i, 1), "0123456789abcdef"))
            return false;
    }
    return true;
}

// __print_flags(flags, "|", More, Overflow, Scanning): names joined by '|',
// an unnamed rest as 0x%lx; empty when none.
bool is_flags(std::string_view s) {
    while (!s.empty()) {
        auto bar = s.find('|');
        auto part = s.substr(0, bar);
        if (part != "More" && part != "Overflow" && part != "Scanning" && !hex(part))
            return false;
        if (bar == std::string_view::npos)
            break;
        s.remove_prefix(bar + 1);
        if (s.empty())
            return false; // a trailing '|'
    }
    return true;
}

// The fields of the body, in the kernel's order, each "key=value" and one
// blank between; values never hold a blank (region and flags may be empty).
class Fields {
  public:
    explicit Fields(std::string_view body) : rest_(body) {}
    // The value of the next field if it is `key`; nullopt (and the error
    // noted) otherwise.
    std::optional<std::string_view> next(std::string_view key, bool optional = false) {
        if (!error_.empty())
            return std::nullopt;
        std::string_view token = rest_.substr(0, rest_.find(' '));
        if (!token.starts_with(key) || token.size() <= key.size() || token[key.size()] != '=') {
            if (!optional)
                error_ = fmt::format("expected {}= at '{}'", key, shorten(rest_));
            return std::nullopt;
        }
        rest_.remove_prefix(token.size());
        if (!rest_.empty()) {
            rest_.remove_prefix(1); // the blank
            if (rest_.empty())
                error_ = "a blank at the end";
        }
        return token.substr(key.size() + 1);
    }
    void fail(std::string_view key, std::string_view value) {
        if (error_.empty())
            error_ = fmt::format("bad {}: '{}'", key, shorten(value));
    }
    bool at_end() const { return rest_.empty(); }
    std::string_view rest() const { return rest_; }
    const std::string& error() const { return error_; }

    static std::string shorten(std::string_view s) {
        return s.size() > 64 ? std::string(s.substr(0, 64)) + "..." : std::string(s);
    }

  private:
    std::string_view rest_;
    std::string error_;
};

} // namespace

Result<PoisonRecord> parse_cxl_poison_line(std::string_view line) {
    constexpr std::string_view marker = ": cxl_poison: ";
    auto bad = [](std::string why) {
        return make_error(EINVAL, "cxl_poison record: " + std::move(why));
    };
    // The header (task, cpu, flags, timestamp) is the tracer's, set by
    // trace options; only its end, "<timestamp>: <event>: ", is relied on.
    // The last marker: a task name (the header's first field) may hold one.
    auto at = line.rfind(marker);
    if (at == std::string_view::npos || at == 0) {
        // What trace_pipe prints when its ring buffer overwrote events.
        constexpr std::string_view cpu = "CPU:", lost = " [LOST ", events = " EVENTS]";
        if (line.starts_with(cpu) && line.ends_with(events)) {
            auto mid = line.find(lost);
            if (mid != std::string_view::npos &&
                decimal(line.substr(cpu.size(), mid - cpu.size())) &&
                decimal(line.substr(mid + lost.size(),
                                    line.size() - events.size() - mid - lost.size())))
                return make_error(EOVERFLOW, std::string(line));
        }
        return bad(fmt::format("not a cxl_poison trace line: '{}'", Fields::shorten(line)));
    }
    Fields f(line.substr(at + marker.size()));
    PoisonRecord r;

    if (auto v = f.next("memdev")) {
        if (!named(*v, "mem"))
            f.fail("memdev", *v);
        r.memdev = std::string(*v);
    }
    if (auto v = f.next("host"); v && (v->empty() || !all_of(*v, "0123456789abcdefABCDEF:._-"
                                                                 "ghijklmnopqrstuvwxyz"
                                                                 "GHIJKLMNOPQRSTUVWXYZ")))
        f.fail("host", *v);
    if (auto v = f.next("serial")) { // %lld of a u64: may print negative
        std::string_view digits = v->starts_with('-') ? v->substr(1) : *v;
        if (!decimal(digits) || (*v == "-0"))
            f.fail("serial", *v);
    }
    if (auto v = f.next("trace_type")) {
        if (*v == "List")
            r.type = PoisonTraceType::list;
        else if (*v == "Inject")
            r.type = PoisonTraceType::inject;
        else if (*v == "Clear")
            r.type = PoisonTraceType::clear;
        else
            f.fail("trace_type", *v);
    }
    if (auto v = f.next("region")) { // empty: no region maps the DPA
        if (!v->empty() && !named(*v, "region"))
            f.fail("region", *v);
        r.region = std::string(*v);
    }
    if (auto v = f.next("region_uuid"); v && !is_uuid(*v))
        f.fail("region_uuid", *v);
    std::optional<std::uint64_t> hpa, alias, dpa, length;
    if (auto v = f.next("hpa"); v && !(hpa = hex(*v)))
        f.fail("hpa", *v);
    if (auto v = f.next("hpa_alias0", true); v && !(alias = hex(*v)))
        f.fail("hpa_alias0", *v);
    if (auto v = f.next("dpa"); v && !(dpa = hex(*v)))
        f.fail("dpa", *v);
    if (auto v = f.next("dpa_length"); v && !(length = hex(*v, 0xffffffffu)))
        f.fail("dpa_length", *v);
    if (auto v = f.next("source"); v && *v != "Unknown" && *v != "External" && *v != "Internal" &&
                                   *v != "Injected" && *v != "Vendor" && *v != "Reserved")
        f.fail("source", *v);
    if (auto v = f.next("flags"); v && !is_flags(*v))
        f.fail("flags", *v);
    if (auto v = f.next("overflow_time"); v && !decimal(*v))
        f.fail("overflow_time", *v);
    if (!f.error().empty())
        return bad(f.error());
    if (!f.at_end())
        return bad(fmt::format("unexpected '{}' after overflow_time", Fields::shorten(f.rest())));

    if (*length == 0)
        return bad("dpa_length=0x0: an empty range");
    if (*dpa > kMax - (*length - 1))
        return bad("dpa + dpa_length passes 2^64");
    r.dpa = *dpa;
    r.length = *length;
    // ULLONG_MAX: no region maps the DPA (or the kernel could not
    // translate it). An address inside a region but no region named is
    // not what the kernel prints.
    for (auto a : {hpa, alias}) {
        if (!a || *a == kMax)
            continue;
        if (r.region.empty())
            return bad("an hpa without a region");
        if (*a > kMax - (*length - 1))
            return bad("hpa + dpa_length passes 2^64");
        r.hpa.push_back({*a, *length});
    }
    return r;
}

void TraceLineSplitter::feed(std::string_view chunk,
                             std::vector<std::optional<std::string>>& lines) {
    while (!chunk.empty()) {
        auto nl = chunk.find('\n');
        std::string_view piece = chunk.substr(0, nl);
        if (!skipping_) {
            if (partial_.size() + piece.size() > kMaxLine) {
                partial_.clear();
                skipping_ = true;
            } else {
                partial_.append(piece);
            }
        }
        if (nl == std::string_view::npos)
            return;
        chunk.remove_prefix(nl + 1);
        if (skipping_)
            lines.emplace_back(std::nullopt);
        else
            lines.emplace_back(std::move(partial_));
        partial_.clear();
        skipping_ = false;
    }
}

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
    return h;
}

PoisonListing trigger_poison_lists(HostOs& os, const std::string& bus_dir) {
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
        const std::string path = fmt::format("{}/{}/trigger_poison_list", bus_dir, name);
        if (!os.exists(path))
            continue;
        if (auto s = os.write_file(path, "1\n"); !s)
            t.failed.push_back(s.error().message);
        else
            t.listed.push_back(name);
    }
    return t;
}

} // namespace tagmem
