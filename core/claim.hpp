// SPDX-License-Identifier: Apache-2.0
// Claiming offered CXL Dynamic Capacity as a devdax device (docs/dcd.md).
//
// On a DCD kernel, capacity an orchestrator adds with a tag arrives as
// extents of a DC region; no dax device holds it yet ("offered"). Writing
// the tag to a 0-size "seed" device's `uuid` makes the kernel carve every
// extent carrying that tag into that device, which device_dax then serves.
// That is the whole claim: nothing is onlined, no memory is touched, and
// untagged capacity (the null UUID) is never claimed: it has no identity an
// application could ask for.
#pragma once

#include "config.hpp"
#include "online.hpp"
#include "result.hpp"
#include "tag_record.hpp"

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace tagmem {

class HostOs;

// Why this offered tag must not be claimed as it stands, or nullopt. The
// kernel builds one device of all of a tag's extents, so a tag whose
// extents lie in several regions, overlap, or are not aligned to
// `align` (the region's, 2 MiB unless it says otherwise) is refused with
// the reason, never claimed in part.
std::optional<std::string> claim_refusal(const TagRecord& offered, std::uint64_t align = 2u << 20);

// Whether tagmemfs claims this offered tag by itself under `config`.
bool claims_automatically(const Config& config, const Uuid& tag);

struct Claimed {
    std::string device; // daxR.N, which took the tag
    Status bound;       // device_dax serves it, or why not
};

// Claims an offered tag: takes the region's 0-size seed (asking the region
// for one when it has none), writes the tag to its `uuid`, and binds it to
// device_dax. An error: nothing took the tag. A device that took the tag
// but would not bind keeps it (the kernel has no un-claim short of
// destroying the device) and says why in `bound`.
Result<Claimed> claim_offered(const TagRecord& offered, HostOs& os);

// Binds a device that took a tag to device_dax: the kernel's bind file
// first, libdaxctl (which loads the module) where the driver is not loaded.
Status bind_claimed(const std::string& device, HostOs& os);

// Gives a claimed device's capacity back to its region: the way to let a
// release the orchestrator asked for go through (the kernel refuses a
// release while a dax device holds the capacity; the orchestrator then asks
// again). Unbinds device_dax, so that nobody can open the device any more,
// then asks `users` who still holds it: anyone (or a failed look) binds it
// again and fails, EADDRINUSE (kInUseError) naming them, nothing lost.
// Otherwise sizes the device to 0 (its extents are offered again) and
// deletes it. `device` is a claimed DC device (daxR.N of a DC region) with
// device_dax or no driver; an error says what state it was left in.
Status unclaim_device(const DaxDevice& device, HostOs& os,
                      const std::function<Result<std::vector<DeviceUser>>()>& users);

} // namespace tagmem
