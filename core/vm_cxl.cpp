// SPDX-License-Identifier: Apache-2.0
#include "vm_cxl.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <set>

namespace tagmem::vm {
namespace {

using nlohmann::json;

constexpr std::string_view kHostBridge = "tagmem-cxl-hb";

std::string dump(const json& j) {
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::uint64_t round_up(std::uint64_t v, std::uint64_t to) {
    return (v + to - 1) / to * to;
}

} // namespace

std::string cxl_device_id(const std::string& tag) {
    // QEMU ids start with a letter and take letters, digits, '-', '.', '_':
    // a canonical UUID after a prefix is one.
    return "tagmem-" + tag;
}

std::string cxl_device_path(const std::string& device_id) {
    return "/machine/peripheral/" + device_id;
}

std::uint64_t cxl_serial(const CxlTag& t) {
    // FNV-1a of the tag's 16 bytes, top bit clear: the same for every guest
    // given the tag, distinct among one guest's devices in practice (the
    // guest matches memdevs to tags by it, and refuses nothing on a clash:
    // it makes every named memdev's region), and never QEMU's "no serial"
    // (all ones).
    std::uint64_t h = 0xcbf29ce484222325ull;
    if (auto parsed = Uuid::parse(t.tag))
        for (auto b : parsed->bytes())
            h = (h ^ b) * 0x100000001b3ull;
    return h >> 1;
}

CxlPlanResult plan_cxl(const json& tags, const std::vector<Uuid>& wanted,
                       const CxlGuestSpec& guest) {
    CxlPlanResult r;
    auto refuse = [&](Refusal why, std::string message) {
        r.refused.push_back(Refused{why, std::move(message)});
    };
    if (wanted.empty())
        refuse(Refusal::usage, "no tag given");
    if (wanted.size() > kMaxCxlTags)
        refuse(Refusal::layout,
               fmt::format("{} tags asked for; --cxl gives a guest at most {} (one CXL device and "
                           "root port each)",
                           wanted.size(), kMaxCxlTags));
    if (auto no = mount_point_refusal(guest.mount_point))
        r.refused.push_back(std::move(*no));
    if (auto no = ram_refusal(guest.ram_size))
        r.refused.push_back(std::move(*no));
    for (auto& no : duplicate_tag_refusals(wanted))
        r.refused.push_back(std::move(no));
    if (!r.refused.empty())
        return r;

    CxlPlan p;
    p.guest = guest;
    std::string mount = guest.mount_point;
    while (mount.ends_with('/'))
        mount.pop_back();
    unsigned index = 0;
    for (const auto& w : wanted) {
        auto c = check_tag(tags, w);
        if (c.refused) {
            r.refused.push_back(std::move(*c.refused));
            continue;
        }
        const json& t = *c.tag;
        CxlTag ct;
        ct.tag = w.str();
        ct.name = t.value("name", std::string());
        ct.shareable = t.value("shareable", false);
        ct.size = t.value("size", std::uint64_t{0});
        ct.index = index++;
        ct.device_id = cxl_device_id(ct.tag);
        ct.backend_id = fmt::format("tagmem-dc{}", ct.index);
        ct.port_id = fmt::format("tagmem-rp{}", ct.index);
        ct.mem_path = fmt::format("{}/{}/data", mount, ct.tag);
        ct.host = host_json(t);
        if (!guest.cdat_dir.empty() && cdat_table(ct))
            ct.cdat_path = fmt::format("{}/{}.cdat", guest.cdat_dir, ct.tag);
        ct.access = t.value("access", json::object());
        // The guest's HDM decoders map whole 256 MiB blocks: a DC region
        // (and so the guest's region and the extent) of another size
        // cannot be committed.
        if (ct.size % kCfmwAlign != 0) {
            refuse(Refusal::layout,
                   fmt::format("tag {} has {} bytes, not a multiple of 256 MiB: a guest's CXL "
                               "decoders map whole 256 MiB blocks",
                               ct.tag, ct.size));
            continue;
        }
        if (p.window + ct.size < p.window) {
            refuse(Refusal::layout, "the tags' sizes overflow the address space");
            continue;
        }
        p.window += ct.size;
        if (!ct.shareable)
            p.warnings.push_back(
                fmt::format("tag {} is not shareable: give it to one guest at a time", ct.tag));
        p.tags.push_back(std::move(ct));
    }
    p.window = round_up(p.window, kCfmwAlign);
    if (r.refused.empty() && cxl_handoff_json(p).size() > kFwCfgMax)
        refuse(Refusal::layout,
               fmt::format("the fw_cfg item would take more than {} bytes", kFwCfgMax));
    if (r.refused.empty())
        r.plan = std::move(p);
    return r;
}

std::string cxl_handoff_json(const CxlPlan& p) {
    json tags = json::array();
    for (const auto& t : p.tags) {
        tags.push_back({{"tag", t.tag},
                        {"name", t.name},
                        {"shareable", t.shareable},
                        {"size", t.size},
                        {"device", t.device_id},
                        {"serial", cxl_serial(t)},
                        {"region", 0},
                        {"host", t.host}});
        // The guest may take the device's CDAT figures as the host's only
        // when the host wrote them: QEMU's own table has invented ones.
        if (!t.cdat_path.empty())
            tags.back()["cdat_from_host"] = true;
    }
    // "tags" stays empty: a guest's tagmem that reads only the boot-time
    // hand-off (version 1) finds no entry to match and ignores "cxl".
    return dump({{"format", "tagmem-handoff"},
                 {"version", 1},
                 {"tags", json::array()},
                 {"cxl", {{"make_dc_regions", true}, {"tags", std::move(tags)}}}});
}

std::vector<std::string> cxl_qemu_args(const CxlPlan& p) {
    std::vector<std::string> a = {
        "-machine", "q35,cxl=on", "-m", fmt::format("{}M", p.guest.ram_size / kMiB),
        // One host bridge for all tags, with HDM decoders of its own (also
        // with one root port), as the DCD tests' topology.
        "-device",
        fmt::format("pxb-cxl,bus_nr={},bus=pcie.0,id={},hdm_for_passthrough=true", kCxlBusNr,
                    kHostBridge)};
    for (const auto& t : p.tags) {
        a.insert(a.end(),
                 {"-object",
                  fmt::format("memory-backend-file,id={},size={},mem-path={},share=on",
                              t.backend_id, t.size, qemu_escape(t.mem_path)),
                  "-device",
                  fmt::format("cxl-rp,port={},bus={},id={},chassis=0,slot={}", t.index, kHostBridge,
                              t.port_id, t.index + 2),
                  "-device",
                  fmt::format("cxl-type3,bus={},id={},volatile-dc-memdev={},num-dc-regions=1,"
                              "sn={}{}",
                              t.port_id, t.device_id, t.backend_id, cxl_serial(t),
                              t.cdat_path.empty() ? std::string()
                                                  : ",cdat=" + qemu_escape(t.cdat_path))});
    }
    a.insert(a.end(), {"-M", fmt::format("cxl-fmw.0.targets.0={},cxl-fmw.0.size={},"
                                         "cxl-fmw.0.interleave-granularity=1k",
                                         kHostBridge, p.window)});
    a.push_back("-fw_cfg");
    a.push_back(fmt::format("name={},string={}", kFwCfgName, qemu_escape(cxl_handoff_json(p))));
    return a;
}

json cxl_plan_json(const CxlPlan& p) {
    json tags = json::array();
    for (const auto& t : p.tags)
        tags.push_back({{"tag", t.tag},
                        {"name", t.name},
                        {"size", t.size},
                        {"device_id", t.device_id},
                        {"qom_path", cxl_device_path(t.device_id)},
                        {"serial", cxl_serial(t)},
                        {"backend_id", t.backend_id},
                        {"mem_path", t.mem_path},
                        {"cdat_path", t.cdat_path}});
    return {{"qemu", cxl_qemu_args(p)},
            {"fw_cfg", {{"name", kFwCfgName}, {"content", json::parse(cxl_handoff_json(p))}}},
            {"cxl", {{"window", p.window}, {"tags", std::move(tags)}}},
            {"warnings", p.warnings}};
}

namespace {

void put_le(std::string& out, std::uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i)
        out += static_cast<char>((v >> (8 * i)) & 0xff);
}

// CDAT structure types and DSLBIS data types (CDAT 1.03, tables 1 and 5).
constexpr std::uint8_t kDsmas = 0, kDslbis = 1, kDsemts = 4;
constexpr std::uint8_t kReadLatency = 1, kWriteLatency = 2, kReadBandwidth = 4, kWriteBandwidth = 5;
constexpr std::uint8_t kDsmasShareable = 1 << 3, kDsmasDynamic = 1 << 5;

std::string structure(std::uint8_t type, const std::string& body) {
    std::string s;
    put_le(s, type, 1);
    put_le(s, 0, 1);
    put_le(s, 4 + body.size(), 2);
    return s + body;
}

} // namespace

std::optional<std::string> cdat_table(const CxlTag& t) {
    const json perf = t.host.value("performance", json::object());
    std::string entries;
    {
        std::string b;
        put_le(b, 0, 1); // DSMAD handle 0: QEMU's DC region 0 refers to it
        put_le(b, kDsmasDynamic | (t.shareable ? kDsmasShareable : 0), 1);
        put_le(b, 0, 2);
        put_le(b, 0, 8); // DPA base: no static capacity before the DC region
        put_le(b, t.size, 8);
        entries += structure(kDsmas, b);
    }
    bool any = false;
    for (auto [key, type] :
         {std::pair{"read_latency_ns", kReadLatency}, std::pair{"write_latency_ns", kWriteLatency},
          std::pair{"read_bandwidth_mbps", kReadBandwidth},
          std::pair{"write_bandwidth_mbps", kWriteBandwidth}}) {
        auto v = perf.find(key);
        if (v == perf.end() || !v->is_number_unsigned())
            continue;
        // Entries are 16 bits times a 64-bit base unit: latency in
        // picoseconds (the host's ns are 1000 ps), bandwidth in MB/s; a
        // value over 65535 units takes a coarser base.
        std::uint64_t value = v->get<std::uint64_t>();
        std::uint64_t base = type <= kWriteLatency ? 1000 : 1;
        while (value > 0xffff) {
            value = (value + 5) / 10;
            base *= 10;
        }
        std::string b;
        put_le(b, 0, 1); // the DSMAS handle
        put_le(b, 0, 1); // flags: memory (HMAT's memory hierarchy 0)
        put_le(b, type, 1);
        put_le(b, 0, 1);
        put_le(b, base, 8);
        put_le(b, value, 2);
        put_le(b, 0, 2);
        put_le(b, 0, 2);
        put_le(b, 0, 2);
        entries += structure(kDslbis, b);
        any = true;
    }
    if (!any)
        return std::nullopt;
    {
        std::string b;
        put_le(b, 0, 1); // the DSMAS handle
        put_le(b, 0, 1); // EFI memory type: conventional
        put_le(b, 0, 2);
        put_le(b, 0, 8);
        put_le(b, t.size, 8);
        entries += structure(kDsemts, b);
    }
    std::string table;
    put_le(table, 16 + entries.size(), 4);
    put_le(table, 1, 1); // revision
    put_le(table, 0, 1); // checksum, set below
    put_le(table, 0, 6);
    put_le(table, 0, 4); // sequence
    table += entries;
    unsigned sum = 0;
    for (char c : table)
        sum += static_cast<unsigned char>(c);
    table[5] = static_cast<char>((256 - sum % 256) % 256); // all bytes sum to 0
    return table;
}

namespace {
json dc_arguments(const std::string& device_id, const std::string& tag, std::uint64_t size) {
    // One extent from offset 0 covering the tag: region offset k is the
    // backend's (the tag's data) offset k, so guest byte k is host byte k.
    return {{"path", cxl_device_path(device_id)},
            {"host-id", 0},
            {"region", 0},
            {"tag", tag},
            {"extents", json::array({{{"offset", 0}, {"len", size}}})}};
}
} // namespace

json qmp_add_capacity(const std::string& device_id, const std::string& tag, std::uint64_t size) {
    json args = dc_arguments(device_id, tag, size);
    args["selection-policy"] = "prescriptive";
    return {{"execute", "cxl-add-dynamic-capacity"}, {"arguments", std::move(args)}};
}

json qmp_release_capacity(const std::string& device_id, const std::string& tag,
                          std::uint64_t size) {
    json args = dc_arguments(device_id, tag, size);
    args["removal-policy"] = "prescriptive";
    return {{"execute", "cxl-release-dynamic-capacity"}, {"arguments", std::move(args)}};
}

json qmp_qom_get(const std::string& path, const std::string& property) {
    return {{"execute", "qom-get"}, {"arguments", {{"path", path}, {"property", property}}}};
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> poison_ranges(const json& bad_ranges,
                                                                   std::uint64_t tag_size) {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
    if (!bad_ranges.is_array())
        return out;
    for (const auto& r : bad_ranges) {
        if (!r.is_object())
            continue;
        auto off = r.find("offset");
        auto len = r.find("length");
        if (off == r.end() || len == r.end() || !off->is_number_unsigned() ||
            !len->is_number_unsigned())
            continue;
        const std::uint64_t o = off->get<std::uint64_t>();
        const std::uint64_t l = len->get<std::uint64_t>();
        if (l == 0 || o >= tag_size)
            continue;
        const std::uint64_t end = std::min(tag_size, l > tag_size - o ? tag_size : o + l);
        const std::uint64_t start = o / kPoisonUnit * kPoisonUnit;
        const std::uint64_t stop =
            std::min(round_up(end, kPoisonUnit), round_up(tag_size, kPoisonUnit));
        std::pair<std::uint64_t, std::uint64_t> p{start, stop - start};
        if (std::find(out.begin(), out.end(), p) == out.end())
            out.push_back(p);
    }
    return out;
}

json qmp_inject_poison(const std::string& device_id, std::uint64_t dpa, std::uint64_t length) {
    return {
        {"execute", "cxl-inject-poison"},
        {"arguments", {{"path", cxl_device_path(device_id)}, {"start", dpa}, {"length", length}}}};
}

} // namespace tagmem::vm
