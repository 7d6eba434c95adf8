// SPDX-License-Identifier: Apache-2.0
#include "cdat.hpp"

#include "host_os.hpp"
#include "sysfs_value.hpp"

#include <fmt/format.h>

#include <cerrno>

namespace tagmem {
namespace {

// CDAT 1.03: structure types (table 1) and the sizes of those tagmem reads.
constexpr std::uint8_t kTypeDsmas = 0, kTypeDslbis = 1;
constexpr std::size_t kHeaderSize = 16, kDsmasSize = 24, kDslbisSize = 24;
// HMAT data types used by DSLBIS (ACPI 6.5, table 5.145).
constexpr std::uint8_t kReadLatency = 1, kWriteLatency = 2, kReadBandwidth = 4, kWriteBandwidth = 5;

std::uint64_t le(std::string_view s, std::size_t off, int bytes) {
    std::uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i)
        v = (v << 8) | static_cast<unsigned char>(s[off + i]);
    return v;
}

Error bad(std::string message) {
    return make_error(EINVAL, "CDAT: " + std::move(message));
}

} // namespace

Result<CdatTable> parse_cdat(std::string_view raw) {
    if (raw.size() < kHeaderSize)
        return bad(fmt::format("{} bytes, shorter than its 16-byte header", raw.size()));
    const std::uint64_t length = le(raw, 0, 4);
    if (length < kHeaderSize || length > raw.size())
        return bad(fmt::format("length field {} for {} bytes read", length, raw.size()));
    raw = raw.substr(0, length);
    unsigned sum = 0;
    for (char c : raw)
        sum += static_cast<unsigned char>(c);
    if (sum % 256 != 0)
        return bad(fmt::format("checksum does not sum to 0 (sum {:#x})", sum % 256));
    CdatTable t;
    for (std::size_t off = kHeaderSize; off < raw.size();) {
        if (raw.size() - off < 4)
            return bad(fmt::format("structure at {} cut off by the table's end", off));
        const auto type = static_cast<std::uint8_t>(raw[off]);
        const std::uint64_t len = le(raw, off + 2, 2);
        if (len < 4 || len > raw.size() - off)
            return bad(fmt::format("structure at {} (type {}) has length {} of {} left", off, type,
                                   len, raw.size() - off));
        if ((type == kTypeDsmas && len != kDsmasSize) ||
            (type == kTypeDslbis && len != kDslbisSize))
            return bad(
                fmt::format("structure at {} (type {}) has length {}, not 24", off, type, len));
        const std::string_view s = raw.substr(off, len);
        if (type == kTypeDsmas)
            t.dsmas.push_back({static_cast<std::uint8_t>(s[4]), static_cast<std::uint8_t>(s[5]),
                               le(s, 8, 8), le(s, 16, 8)});
        else if (type == kTypeDslbis)
            t.dslbis.push_back({static_cast<std::uint8_t>(s[4]), static_cast<std::uint8_t>(s[5]),
                                static_cast<std::uint8_t>(s[6]), le(s, 8, 8),
                                static_cast<std::uint16_t>(le(s, 16, 2))});
        // Other types (DSEMTS, DSSLBIS, DSMSCIS, SSLBIS, newer ones) hold
        // nothing tagmem shows.
        off += len;
    }
    return t;
}

std::optional<Performance> cdat_dc_performance(const CdatTable& table) {
    const CdatDsmas* dc = nullptr;
    for (const auto& d : table.dsmas) {
        if (!(d.flags & CdatDsmas::kDynamicCapacity))
            continue;
        if (dc) // two DC ranges: which one is the tag's is not known here
            return std::nullopt;
        dc = &d;
    }
    if (!dc)
        return std::nullopt;
    Performance p;
    for (const auto& l : table.dslbis) {
        // flags 0: the figures of the memory itself (HMAT's memory
        // hierarchy), not of a cache in front of it.
        if (l.handle != dc->handle || l.flags != 0 || l.base_unit == 0)
            continue;
        const std::uint64_t v = l.entry * l.base_unit;
        if (v / l.base_unit != l.entry)
            continue; // overflow: no figure rather than a wrong one
        switch (l.data_type) {
        case kReadLatency: p.read_latency_ns = (v + 500) / 1000; break;
        case kWriteLatency: p.write_latency_ns = (v + 500) / 1000; break;
        case kReadBandwidth: p.read_bandwidth_mbps = v; break;
        case kWriteBandwidth: p.write_bandwidth_mbps = v; break;
        default: break;
        }
    }
    if (p.empty())
        return std::nullopt;
    return p;
}

Result<std::optional<Performance>> dc_region_cdat_performance(HostOs& os,
                                                              const std::string& dax_region_path,
                                                              const std::string& bus_dir) {
    const auto slash = dax_region_path.rfind('/');
    if (slash == std::string::npos || slash == 0)
        return make_error(EINVAL, fmt::format("{}: no region above it", dax_region_path));
    const std::string region = dax_region_path.substr(0, slash);
    auto target = os.read_file(region + "/target0");
    if (!target)
        return target.error();
    // decoderE.M: an endpoint decoder is named after its port, endpointE.
    const std::string_view decoder = trim_attr(*target);
    const auto dot = decoder.find('.');
    if (!decoder.starts_with("decoder") || dot == std::string_view::npos || dot == 7 ||
        decoder.substr(7, dot - 7).find_first_not_of("0123456789") != std::string_view::npos)
        return make_error(EINVAL,
                          fmt::format("{}/target0: not a decoder name: '{}'", region, decoder));
    const std::string path = fmt::format("{}/endpoint{}/CDAT", bus_dir, decoder.substr(7, dot - 7));
    // A CDAT is a few hundred bytes; the DOE mailbox caps it far below this.
    auto raw = os.read_file_bounded(path, 64 * 1024);
    if (!raw && raw.error().code == ENOENT)
        return std::optional<Performance>{};
    if (!raw)
        return raw.error();
    auto table = parse_cdat(*raw);
    if (!table)
        return make_error(table.error().code, fmt::format("{}: {}", path, table.error().message));
    return cdat_dc_performance(*table);
}

} // namespace tagmem
