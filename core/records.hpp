// SPDX-License-Identifier: Apache-2.0
// Policy: turns probed devices and the configuration into tag records. Pure
// logic (no OS access but the user lookups of HostOs), so it is unit-tested
// directly.
#pragma once

#include "config.hpp"
#include "tag_record.hpp"

#include <optional>
#include <vector>

namespace tagmem {

class HostOs;

// The configured tag of a device that carries none; an error when two
// sections match it (the device is then rejected).
Result<std::optional<Uuid>> config_tag_for(const DaxDevice& dev, const Config& config);

// One tag's record from the devices that carry it (several: a conflict; none:
// offered by DCD extents alone). lookup_failure, when given, receives the
// first failed (is_transient) lookup of the configured owner or group; the
// record then falls back to root for it.
TagRecord make_record(const Uuid& tag, std::vector<std::shared_ptr<const ProbedDevice>> devices,
                      std::vector<Extent> offered_extents, const Config& config, HostOs& os,
                      std::optional<Error>* lookup_failure = nullptr);

} // namespace tagmem
