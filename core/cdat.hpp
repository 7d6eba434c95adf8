// SPDX-License-Identifier: Apache-2.0
#pragma once

// The CXL device's CDAT (Coherent Device Attribute Table, CDAT 1.03) as the
// guest kernel read it from the device over DOE and shows it in the endpoint
// port's binary `CDAT` attribute. Why tagmem reads it: `tagmem vm-args
// --cxl --cdat-dir` puts the host's figures for a tag there, and this DCD
// guest kernel computes no access coordinates for a dynamic_ram_1 region,
// so the table itself is where the guest's kernel holds them.

#include "device.hpp"
#include "result.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tagmem {

class HostOs;

// Device Scoped Memory Affinity Structure: a DPA range and its properties.
struct CdatDsmas {
    std::uint8_t handle = 0;
    std::uint8_t flags = 0;
    std::uint64_t dpa_base = 0;
    std::uint64_t dpa_length = 0;
    static constexpr std::uint8_t kShareable = 1 << 3;
    static constexpr std::uint8_t kDynamicCapacity = 1 << 5;
};

// Device Scoped Latency and Bandwidth Information Structure: one figure
// (data_type, HMAT's) of the DSMAS with the same handle; value = entry *
// base_unit, in picoseconds for latencies and MB/s for bandwidths.
struct CdatDslbis {
    std::uint8_t handle = 0;
    std::uint8_t flags = 0;
    std::uint8_t data_type = 0;
    std::uint64_t base_unit = 0;
    std::uint16_t entry = 0;
};

struct CdatTable {
    std::vector<CdatDsmas> dsmas;
    std::vector<CdatDslbis> dslbis;
};

// The table's header and the structures tagmem uses; structures of other
// types are skipped by their length. An error names what is wrong: a
// table shorter than its header or its length field, a structure running
// past the table or with a length its type does not have, a checksum that
// does not make the bytes sum to 0.
Result<CdatTable> parse_cdat(std::string_view raw);

// The figures of the table's one dynamic capacity DSMAS (the DC region
// vm-args --cxl gives a tag), latencies in ns (rounded to nearest),
// bandwidths in MB/s; nullopt when there is no such DSMAS, more than one,
// or it has no figure.
std::optional<Performance> cdat_dc_performance(const CdatTable& table);

// The figures the guest kernel's CDAT gives for the devices of a DC
// region: dax_region_path is .../regionN/dax_regionN; the region's target0
// names its endpoint decoder decoderE.M, whose port endpointE (in bus_dir)
// shows the CDAT. nullopt when the kernel shows no table (a device without
// one, or a kernel without the attribute); an error when it is unreadable
// or malformed.
Result<std::optional<Performance>>
dc_region_cdat_performance(HostOs& os, const std::string& dax_region_path,
                           const std::string& bus_dir = "/sys/bus/cxl/devices");

} // namespace tagmem
