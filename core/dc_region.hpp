// SPDX-License-Identifier: Apache-2.0
// Making a CXL memdev's dynamic_ram_1 region, so that Dynamic Capacity can
// arrive (docs/dcd.md, "The administrator's step"). No cxl-cli release can
// do it yet; in a guest whose hand-off item asks for it (vm-args --cxl,
// docs/vm.md) tagmemfs does it at start, so a stock guest image needs no
// hand step. Everything goes through HostOs: the sysfs paths are here
// only.
#pragma once

#include "result.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tagmem {

class HostOs;

inline constexpr const char* kCxlBusDevices = "/sys/bus/cxl/devices";

struct DcRegionMade {
    std::string memdev;  // memN
    std::string region;  // regionK, empty when it was there already
    std::string decoder; // the endpoint decoder, decoderE.D
    std::uint64_t size = 0;
};

struct DcRegionReport {
    std::vector<DcRegionMade> made;    // made now, or found made
    std::vector<std::string> failures; // one line per memdev that could not
};

// For every memdev with dynamic_ram_1 capacity (and, when `serials` is
// not empty, whose serial is one of them) whose endpoint decoder is still
// free: a region from the root decoder that offers
// create_dynamic_ram_1_region, granularity the root's, one way, the
// endpoint decoder in dynamic_ram_1 mode over the whole partition,
// committed and bound to cxl_region. A memdev whose endpoint decoder is
// already in dynamic_ram_1 mode with a size is left as it is (made by an
// earlier start, or by the administrator).
DcRegionReport make_dc_regions(HostOs& os, const std::vector<std::uint64_t>& serials,
                               const std::string& bus_dir = kCxlBusDevices);

// In a guest whose hand-off item asks for it (vm-args --cxl): the regions
// of the memdevs the item names by serial, each waited for until its DAX
// region shows (at most `settle_ms` in all), so that the daemon's first
// scan finds them. Nothing when there is no item or it does not ask.
DcRegionReport make_handed_dc_regions(HostOs& os, unsigned settle_ms = 5000,
                                      const std::string& bus_dir = kCxlBusDevices);

} // namespace tagmem
