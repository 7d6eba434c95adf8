// SPDX-License-Identifier: Apache-2.0
// The JSON form of tags and scans. Keys are stable (documented in
// tagmem(1)); the `metadata` file of tagmemfs is exactly tag_to_json().
#pragma once

#include "tag_record.hpp"

#include <nlohmann/json.hpp>

namespace tagmem {

// privileged: with what the kernel shows root alone (0400 sysfs attributes:
// the physical address ranges of devices). tagmemfs renders for a
// non-root reader without them; a local scan renders what it could read.
nlohmann::json tag_to_json(const TagRecord& tag, bool privileged = true);
nlohmann::json scan_to_json(const ScanResult& scan, bool privileged = true);

} // namespace tagmem
