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

std::string format_table(const ScanResult& scan) {
    std::string out = fmt::format("{:<36}  {:<10} {:>10}  {:<6}  {:<10}  {}\n", "TAG", "DEVICE",
                                  "SIZE", "SOURCE", "STATE", "NAME");
    for (const auto& t : scan.tags) {
        const auto* d = t.device();
        std::string dev = d                   ? d->dev.name
                          : t.devices.empty() ? std::string(1, '-')
                                              : fmt::format("{} devices", t.devices.size());
        std::string size = d ? human_size(d->dev.size) : std::string(1, '-');
        out += fmt::format("{:<36}  {:<10} {:>10}  {:<6}  {:<10}  {}\n", t.tag.str(), dev, size,
                           to_string(t.source), to_string(t.state), t.name.str());
    }
    if (scan.tags.empty())
        out += "(no tagged memory on this host)\n";
    for (const auto& u : scan.untagged)
        out +=
            fmt::format("untagged: {} ({}, {})\n", u.device, human_size(u.size), to_string(u.mode));
    for (const auto& r : scan.rejected)
        out += fmt::format("rejected: {}: {}\n", r.device, r.reason);
    for (const auto& e : scan.config_errors)
        out += fmt::format("config error: {}\n", e);
    return out;
}

std::string format_tag(const TagRecord& t) {
    std::string out;
    auto line = [&](std::string_view key, const std::string& value) {
        out += fmt::format("{:<14} {}\n", fmt::format("{}:", key), value);
    };
    line("tag", t.tag.str());
    if (!t.name.empty())
        line("name", t.name.str());
    line("state", to_string(t.state));
    if (!t.reason.empty())
        line("reason", t.reason);
    line("source", to_string(t.source));
    line("shareable",
         fmt::format("{} ({})", t.shareable ? "yes" : "no", to_string(t.shareable_from)));
    line("access",
         fmt::format("{}:{} {:04o}", t.access.owner.str(), t.access.group.str(), t.access.mode));
    for (const auto& e : t.offered_extents)
        line("extent", fmt::format("{} offset {:#x} length {:#x} (offered)", e.name.str(), e.offset,
                                   e.length));
    for (const auto& shared : t.devices) {
        const ProbedDevice& p = *shared;
        const auto& d = p.dev;
        line("device", fmt::format("{} ({}:{}, {})", d.dev_path(), d.devno.major, d.devno.minor,
                                   to_string(d.mode)));
        line("  size", fmt::format("{} ({} bytes)", human_size(d.size), d.size));
        line("  align", human_size(d.align));
        line("  numa", fmt::format("node {}, target node {}", p.numa_node, d.target_node));
        for (const auto& r : d.ranges)
            line("  range", fmt::format("{:#x}-{:#x}", r.start, r.end));
        for (const auto& e : p.extents)
            line("  extent",
                 fmt::format("{} offset {:#x} length {:#x}", e.name.str(), e.offset, e.length));
        if (!p.notes->namespace_name.empty())
            line("  namespace", p.notes->namespace_name);
        if (p.notes->infoblock_uuid)
            line("  infoblock", p.notes->infoblock_uuid->str());
        const auto& perf = *p.performance;
        if (perf.read_latency_ns || perf.read_bandwidth_mbps)
            line("  performance",
                 fmt::format("read {} ns / {} MB/s, write {} ns / {} MB/s",
                             perf.read_latency_ns.value_or(0), perf.read_bandwidth_mbps.value_or(0),
                             perf.write_latency_ns.value_or(0),
                             perf.write_bandwidth_mbps.value_or(0)));
        for (const auto& w : p.notes->warnings)
            line("  warning", w);
    }
    return out;
}

} // namespace tagmem::cli
