// SPDX-License-Identifier: Apache-2.0
#include "format.hpp"

#include <fmt/format.h>

#include <array>

namespace tagmem::cli {

std::string human_size(std::uint64_t bytes) {
    static constexpr std::array<const char*, 5> units = {"B", "KiB", "MiB", "GiB", "TiB"};
    std::size_t u = 0;
    double v = static_cast<double>(bytes);
    while (v >= 1024 && u + 1 < units.size() && bytes % (1ull << (10 * (u + 1))) == 0) {
        v /= 1024;
        ++u;
    }
    if (u == 0 && bytes >= 1024) { // not a round number: show it with decimals
        while (v >= 1024 && u + 1 < units.size()) {
            v /= 1024;
            ++u;
        }
        return fmt::format("{:.1f} {}", v, units[u]);
    }
    return fmt::format("{} {}", static_cast<std::uint64_t>(v), units[u]);
}

namespace {

using nlohmann::json;

// Lenient readers: a key that is absent or of another type reads as empty,
// so a reply from another version of tagmemfs still prints.
std::string str(const json& j, const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}
std::uint64_t num(const json& j, const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_number_unsigned() ? it->get<std::uint64_t>() : 0;
}
long long snum(const json& j, const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_number_integer() ? it->get<long long>() : -1;
}
const json& arr(const json& j, const char* key) {
    static const json empty = json::array();
    auto it = j.find(key);
    return it != j.end() && it->is_array() ? *it : empty;
}

std::string extent_text(const json& e) {
    return fmt::format("{} offset {:#x} length {:#x}", str(e, "extent"), num(e, "offset"),
                       num(e, "length"));
}

} // namespace

std::string format_table(const json& scan) {
    std::string out = fmt::format("{:<36}  {:<10} {:>10}  {:<7}  {:<10}  {}\n", "TAG", "DEVICE",
                                  "SIZE", "SOURCE", "STATE", "NAME");
    const json& tags = arr(scan, "tags");
    for (const auto& t : tags) {
        const auto ndev = arr(t, "devices").size();
        const bool one = t.contains("device");
        std::string dev = one         ? str(t, "device")
                          : ndev == 0 ? std::string(1, '-')
                                      : fmt::format("{} devices", ndev);
        std::string size = one ? human_size(num(t, "size")) : std::string(1, '-');
        out += fmt::format("{:<36}  {:<10} {:>10}  {:<7}  {:<10}  {}\n", str(t, "tag"), dev, size,
                           str(t, "source"), str(t, "state"), str(t, "name"));
    }
    if (tags.empty())
        out += "(no tagged memory on this host)\n";
    for (const auto& u : arr(scan, "untagged"))
        out += fmt::format("untagged: {} ({}, {})\n", str(u, "device"), human_size(num(u, "size")),
                           str(u, "mode"));
    for (const auto& r : arr(scan, "rejected"))
        out += fmt::format("rejected: {}: {}\n", str(r, "device"), str(r, "reason"));
    for (const auto& e : arr(scan, "config_errors"))
        out += fmt::format("config error: {}\n", e.is_string() ? e.get<std::string>() : e.dump());
    return out;
}

std::string format_tag(const json& t) {
    std::string out;
    auto line = [&](std::string_view key, const std::string& value) {
        out += fmt::format("{:<14} {}\n", fmt::format("{}:", key), value);
    };
    line("tag", str(t, "tag"));
    if (!str(t, "name").empty())
        line("name", str(t, "name"));
    line("state", str(t, "state"));
    if (!str(t, "reason").empty())
        line("reason", str(t, "reason"));
    line("source", str(t, "source"));
    const bool shareable = t.value("shareable", false);
    line("shareable", fmt::format("{} ({})", shareable ? "yes" : "no", str(t, "shareable_from")));
    const json access = t.value("access", json::object());
    line("access",
         fmt::format("{}:{} {}", str(access, "owner"), str(access, "group"), str(access, "mode")));
    for (const auto& e : arr(t, "extents"))
        line("extent", extent_text(e) + " (offered)");
    for (const auto& d : arr(t, "devices")) {
        line("device", fmt::format("{} ({}:{}, {})", str(d, "path"), num(d, "major"),
                                   num(d, "minor"), str(d, "mode")));
        line("  size", fmt::format("{} ({} bytes)", human_size(num(d, "size")), num(d, "size")));
        line("  align", human_size(num(d, "align")));
        line("  numa",
             fmt::format("node {}, target node {}", snum(d, "numa_node"), snum(d, "target_node")));
        for (const auto& r : arr(d, "ranges"))
            line("  range", fmt::format("{:#x}-{:#x}", num(r, "start"), num(r, "end")));
        for (const auto& e : arr(d, "extents"))
            line("  extent", extent_text(e));
        if (!str(d, "namespace").empty())
            line("  namespace", str(d, "namespace"));
        if (!str(d, "infoblock_uuid").empty())
            line("  infoblock", str(d, "infoblock_uuid"));
        if (auto p = d.find("performance");
            p != d.end() && p->is_object() &&
            (p->contains("read_latency_ns") || p->contains("read_bandwidth_mbps")))
            line("  performance",
                 fmt::format("read {} ns / {} MB/s, write {} ns / {} MB/s",
                             num(*p, "read_latency_ns"), num(*p, "read_bandwidth_mbps"),
                             num(*p, "write_latency_ns"), num(*p, "write_bandwidth_mbps")));
        for (const auto& w : arr(d, "warnings"))
            line("  warning", w.is_string() ? w.get<std::string>() : w.dump());
    }
    // Memory errors, as offsets within the tag's data (docs/health.md).
    if (auto h = t.find("health"); h != t.end() && h->is_object()) {
        line("health", str(*h, "status"));
        // Why an error list was not read whole (incomplete, or degraded with maybe more).
        if (h->contains("reason"))
            line("  not read whole", str(*h, "reason"));
        for (const auto& b : arr(*h, "bad_ranges"))
            line("  bad range",
                 fmt::format("offset {:#x}, {} bytes, first seen {}", num(b, "offset"),
                             num(b, "length"), str(b, "first_seen")));
    }
    return out;
}

} // namespace tagmem::cli
