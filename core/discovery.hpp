// SPDX-License-Identifier: Apache-2.0
// The whole scan of a host: enumerate (libdaxctl), probe each device, apply
// the configuration. The CLI and the filesystem both call exactly this.
#pragma once

#include "config.hpp"
#include "result.hpp"
#include "tag_record.hpp"

namespace tagmem {

class HostOs;

// Fails only when libdaxctl cannot start; every per-device problem is
// reported inside the result.
Result<ScanResult> scan_host(const Config& config, HostOs& os);

} // namespace tagmem
