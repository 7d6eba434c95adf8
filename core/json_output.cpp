// SPDX-License-Identifier: Apache-2.0
#include "json_output.hpp"

#include <fmt/format.h>

namespace tagmem {
namespace {

using nlohmann::json;

json ranges_json(const SmallVec<PhysRange>& ranges) {
    json out = json::array();
    for (const auto& r : ranges)
        out.push_back({{"start", r.start}, {"end", r.end}, {"size", r.end - r.start + 1}});
    return out;
}

json device_json(const ProbedDevice& p, bool privileged) {
    const DaxDevice& d = p.dev;
    json j = {
        {"device", d.name},         {"path", d.dev_path()},          {"major", d.devno.major},
        {"minor", d.devno.minor},   {"source", to_string(p.source)}, {"size", d.size},
        {"align", d.align},         {"mode", to_string(d.mode)},     {"region", d.region_id},
        {"numa_node", p.numa_node}, {"target_node", d.target_node},
    };
    if (privileged)
        j["ranges"] = ranges_json(d.ranges);
    if (p.source == TagSource::dcd) {
        json ext = json::array();
        for (const auto& e : p.extents)
            ext.push_back({{"extent", e.name.str()}, {"offset", e.offset}, {"length", e.length}});
        j["extents"] = std::move(ext);
    }
    if (!p.notes->namespace_name.empty())
        j["namespace"] = p.notes->namespace_name;
    if (p.notes->infoblock_uuid)
        j["infoblock_uuid"] = p.notes->infoblock_uuid->str();
    if (!p.performance->empty()) {
        json perf = json::object();
        auto put = [&](const char* key, const std::optional<std::uint64_t>& v) {
            if (v)
                perf[key] = *v;
        };
        put("read_latency_ns", p.performance->read_latency_ns);
        put("write_latency_ns", p.performance->write_latency_ns);
        put("read_bandwidth_mbps", p.performance->read_bandwidth_mbps);
        put("write_bandwidth_mbps", p.performance->write_bandwidth_mbps);
        j["performance"] = std::move(perf);
        // Where each value came from: a VM guest's memory has the host's
        // (the guest kernel shows no HMAT data for a soft-reserved node), a
        // vm-args --cxl tag the host's figures from its device's CDAT.
        json from = json::object();
        const Performance none;
        const Performance& host = p.notes->handoff ? p.notes->handoff->host_performance : none;
        const Performance& cdat = p.notes->guest_cdat;
        for (auto [key, field] :
             {std::pair{"read_latency_ns", &Performance::read_latency_ns},
              std::pair{"write_latency_ns", &Performance::write_latency_ns},
              std::pair{"read_bandwidth_mbps", &Performance::read_bandwidth_mbps},
              std::pair{"write_bandwidth_mbps", &Performance::write_bandwidth_mbps}})
            if ((*p.performance).*field)
                from[key] = cdat.*field   ? "guest kernel (CDAT)"
                            : host.*field ? "host via fw_cfg"
                                          : "HMAT access0";
        j["performance_source"] = std::move(from);
    }
    if (const auto& h = p.notes->handoff) {
        json host = {{"device", h->host_device}, {"source", h->host_source}};
        if (h->host_numa_node)
            host["numa_node"] = *h->host_numa_node;
        j["handoff"] = {{"item", "fw_cfg opt/org.tagmem/tags"},
                        {"tag", h->tag.str()},
                        {"host", std::move(host)}};
        if (h->cxl_device.empty())
            j["handoff"]["guest_node"] = h->guest_node;
        else
            j["handoff"]["cxl_device"] = h->cxl_device;
    }
    if (!p.notes->warnings.empty())
        j["warnings"] = p.notes->warnings;
    return j;
}

} // namespace

json health_to_json(const TagHealth* health) {
    json bad = json::array();
    if (health)
        for (const auto& b : health->bad)
            bad.push_back({{"offset", b.offset},
                           {"length", b.length},
                           {"first_seen", iso8601_utc(b.first_seen)}});
    json j = {{"status", health ? health->status() : "ok"}, {"bad_ranges", std::move(bad)}};
    // Why the lists may be partial ("incomplete", or "degraded" with maybe
    // more): never a physical address.
    if (health && !health->incomplete.empty()) {
        std::string why;
        for (const auto& w : health->incomplete)
            why += (why.empty() ? "" : "; ") + w;
        j["reason"] = why;
    }
    return j;
}

json tag_to_json(const TagRecord& t, bool privileged) {
    json j = {
        {"tag", t.tag.str()},
        {"name", t.name.str()},
        {"source", to_string(t.source)},
        {"state", to_string(t.state)},
        {"shareable", t.shareable},
        {"shareable_from", to_string(t.shareable_from)},
        {"access",
         {{"owner", t.access.owner.str()},
          {"group", t.access.group.str()},
          {"uid", t.access.uid},
          {"gid", t.access.gid},
          {"mode", fmt::format("{:04o}", t.access.mode)}}},
    };
    if (!t.reason.empty())
        j["reason"] = t.reason;
    if (const auto* d = t.device()) {
        j["device"] = d->dev.name;
        j["path"] = d->dev.dev_path();
        j["size"] = d->dev.size;
        j["align"] = d->dev.align;
    }
    if (!t.offered_extents.empty()) {
        json ext = json::array();
        for (const auto& e : t.offered_extents)
            ext.push_back({{"extent", e.name.str()}, {"offset", e.offset}, {"length", e.length}});
        j["extents"] = std::move(ext);
    }
    json devs = json::array();
    for (const auto& d : t.devices)
        devs.push_back(device_json(*d, privileged));
    j["devices"] = std::move(devs);
    // Offsets within the tag's data only: the physical addresses of the bad
    // ranges are root's (docs/health.md).
    j["health"] = health_to_json(t.health.get());
    if (t.release_requested != 0)
        j["release_requested"] = iso8601_utc(t.release_requested);
    return j;
}

json scan_to_json(const ScanResult& scan, bool privileged) {
    json tags = json::array();
    for (const auto& t : scan.tags)
        tags.push_back(tag_to_json(t, privileged));
    json untagged = json::array();
    for (const auto& u : scan.untagged) {
        json j = {{"device", u.device},
                  {"size", u.size},
                  {"mode", to_string(u.mode)},
                  {"target_node", u.target_node}};
        if (privileged)
            j["ranges"] = ranges_json(u.ranges);
        untagged.push_back(std::move(j));
    }
    json rejected = json::array();
    for (const auto& r : scan.rejected)
        rejected.push_back({{"device", r.device}, {"reason", r.reason}});
    return {{"tags", std::move(tags)},
            {"untagged", std::move(untagged)},
            {"rejected", std::move(rejected)},
            {"config_errors", scan.config_errors}};
}

} // namespace tagmem
