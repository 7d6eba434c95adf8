// SPDX-License-Identifier: Apache-2.0
// A Dynamic Capacity event of a CXL memory device (docs/health.md, "CXL
// poison"): the kernel's cxl:cxl_dynamic_capacity trace event, on kernels
// with the DCD series. An extent added, released or force-released, by the
// tag the device gave it. A release of a claimed tag is otherwise invisible
// to tagmem: the device asks, and the kernel says so only here.
#pragma once

#include "uuid.hpp"

#include <cstdint>
#include <string>

namespace tagmem {

struct DcCapacityEvent {
    std::string memdev; // memN
    // The event_type field (CXL 3.1 table 8-50's Dynamic Capacity Event Type).
    enum class DcEventType { add, release, forced_release, region_updated } type = DcEventType::add;
    std::uint64_t dpa_start = 0;
    std::uint64_t length = 0;
    Uuid tag;                     // the extent's tag (all zero: untagged)
    std::uint16_t shared_seq = 0; // sh_extent_seq
};

} // namespace tagmem
