// SPDX-License-Identifier: Apache-2.0
// Policy: turns probed devices and the configuration into tag records. Pure
// logic (no OS access but the user lookups of HostOs), so it is unit-tested
// directly.
#pragma once

#include "config.hpp"
#include "tag_record.hpp"

#include <vector>

namespace tagmem {

class HostOs;

ScanResult build_records(std::vector<ProbedDevice> devices, std::vector<DeviceIssue> rejected,
                         const Config& config, HostOs& os);

} // namespace tagmem
