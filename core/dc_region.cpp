// SPDX-License-Identifier: Apache-2.0
#include "dc_region.hpp"

#include "handoff.hpp"
#include "host_os.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <thread>

namespace tagmem {
namespace {

std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\0'))
        s.pop_back();
    return s;
}

std::optional<std::uint64_t> number(const std::string& text) {
    std::string t = trim(text);
    int base = 10;
    std::string_view v = t;
    if (v.starts_with("0x")) {
        base = 16;
        v.remove_prefix(2);
    }
    std::uint64_t n = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n, base);
    if (ec != std::errc() || end != v.data() + v.size() || v.empty())
        return std::nullopt;
    return n;
}

Result<std::string> read(HostOs& os, const std::string& path) {
    auto text = os.read_file(path);
    if (!text)
        return text.error();
    return trim(*text);
}

// Names in `dir` that start with `prefix`, sorted.
std::vector<std::string> entries(HostOs& os, const std::string& dir, std::string_view prefix) {
    std::vector<std::string> out;
    if (auto list = os.list_dir(dir))
        for (auto& n : *list)
            if (n.starts_with(prefix))
                out.push_back(n);
    std::sort(out.begin(), out.end());
    return out;
}

// The memdev's endpoint decoder: the endpoint port whose uport is the
// memdev (endpointE/uport -> .../memN) has it as decoderE.0. The port is
// not under the memdev in sysfs but under the port above it.
Result<std::string> endpoint_decoder(HostOs& os, const std::string& bus, const std::string& mem) {
    for (const auto& ep : entries(os, bus, "endpoint")) {
        auto uport = os.read_link(fmt::format("{}/{}/uport", bus, ep));
        if (!uport || !(uport->ends_with("/" + mem) || *uport == mem))
            continue;
        for (const auto& d : entries(os, bus + "/" + ep, "decoder"))
            return d;
    }
    return make_error(ENOENT, "no endpoint decoder (endpoint port with this uport)");
}

Result<std::string> root_decoder(HostOs& os, const std::string& bus) {
    for (const auto& d : entries(os, bus, "decoder"))
        if (os.exists(fmt::format("{}/{}/create_dynamic_ram_1_region", bus, d)))
            return d;
    return make_error(ENOENT, "no root decoder offers create_dynamic_ram_1_region");
}

Status write(HostOs& os, const std::string& path, const std::string& value) {
    auto ok = os.write_file(path, value);
    if (!ok)
        return make_error(ok.error().code,
                          fmt::format("{} <- {}: {}", path, value, ok.error().message));
    return Ok{};
}

Result<DcRegionMade> make_one(HostOs& os, const std::string& bus, const std::string& mem,
                              std::uint64_t size) {
    DcRegionMade m{mem, "", "", size};
    auto ep = endpoint_decoder(os, bus, mem);
    if (!ep)
        return ep.error();
    m.decoder = *ep;
    const std::string epd = bus + "/" + *ep;
    auto mode = read(os, epd + "/mode");
    auto dpa = read(os, epd + "/dpa_size");
    if (mode && *mode == "dynamic_ram_1" && dpa && number(*dpa).value_or(0) != 0)
        return m; // made before: nothing to do
    auto root = root_decoder(os, bus);
    if (!root)
        return root.error();
    const std::string rd = bus + "/" + *root;
    // Reading create_dynamic_ram_1_region names the next region; writing
    // the name back makes it.
    auto name = read(os, rd + "/create_dynamic_ram_1_region");
    if (!name)
        return name.error();
    if (auto ok = write(os, rd + "/create_dynamic_ram_1_region", *name); !ok)
        return ok.error();
    m.region = *name;
    const std::string reg = bus + "/" + *name;
    auto granularity = read(os, rd + "/interleave_granularity");
    if (!granularity)
        return granularity.error();
    const std::string sz = std::to_string(size);
    for (auto [path, value] :
         {std::pair{reg + "/interleave_granularity", *granularity},
          std::pair{reg + "/interleave_ways", std::string("1")},
          std::pair{epd + "/mode", std::string("dynamic_ram_1")}, std::pair{epd + "/dpa_size", sz},
          std::pair{reg + "/size", sz}, std::pair{reg + "/target0", *ep},
          std::pair{reg + "/commit", std::string("1")}})
        if (auto ok = write(os, path, value); !ok)
            return ok.error();
    // Usually bound by the commit already: EBUSY/EEXIST then say so.
    (void)os.write_file(bus + "/../drivers/cxl_region/bind", *name);
    return m;
}

} // namespace

DcRegionReport make_dc_regions(HostOs& os, const std::vector<std::uint64_t>& serials,
                               const std::string& bus) {
    DcRegionReport report;
    for (const auto& mem : entries(os, bus, "mem")) {
        auto size = read(os, fmt::format("{}/{}/dynamic_ram_1/size", bus, mem));
        if (!size || number(*size).value_or(0) == 0)
            continue; // no DC partition
        if (!serials.empty()) {
            auto serial = read(os, fmt::format("{}/{}/serial", bus, mem));
            auto n = serial ? number(*serial) : std::nullopt;
            if (!n || std::find(serials.begin(), serials.end(), *n) == serials.end())
                continue;
        }
        auto made = make_one(os, bus, mem, *number(*size));
        if (made)
            report.made.push_back(std::move(*made));
        else
            report.failures.push_back(fmt::format("{}: {}", mem, made.error().message));
    }
    return report;
}

DcRegionReport make_handed_dc_regions(HostOs& os, unsigned settle_ms, const std::string& bus) {
    auto item = read_handoff(os);
    if (!item || !item->make_dc_regions)
        return {};
    std::vector<std::uint64_t> serials;
    for (const auto& e : item->cxl)
        if (e.cxl_serial)
            serials.push_back(*e.cxl_serial);
    if (serials.empty())
        return {};
    DcRegionReport report = make_dc_regions(os, serials, bus);
    // The commit makes the DAX region asynchronously (the cxl_dax_region
    // driver's probe); a first scan before it would find no region to
    // poll for extents.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(settle_ms);
    for (const auto& m : report.made) {
        if (m.region.empty())
            continue;
        const std::string dax = fmt::format("{}/{}/dax_{}", bus, m.region, m.region);
        while (!os.exists(dax) && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        if (!os.exists(dax))
            report.failures.push_back(
                fmt::format("{}: committed, but no DAX region {} appeared", m.region, dax));
    }
    return report;
}

} // namespace tagmem
