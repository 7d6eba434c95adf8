// SPDX-License-Identifier: Apache-2.0
// The JSON form of tags and scans. Keys are stable (documented in
// tagmem(1)); the `metadata` file of tagmemfs is exactly
// tag_to_json(tag, false).
//
// privileged: whether the reader may see what the kernel shows only to root.
// The physical address ranges of a device (dax `mappingN/start`, `end` and
// `resource` are mode 0400) are left out when false: `metadata` is
// world-readable, and physical addresses help an attacker aim (Rowhammer,
// side channels), which is why the kernel hides them. Pass true only for a
// reader known to be root (euid 0, or SO_PEERCRED uid 0 on a socket).
#pragma once

#include "tag_record.hpp"

#include <nlohmann/json.hpp>

namespace tagmem {

nlohmann::json tag_to_json(const TagRecord& tag, bool privileged);
// {"status": "ok"|"degraded", "bad_ranges": [{"offset", "length",
// "first_seen"}]}: offsets within the tag's data, never physical addresses.
nlohmann::json health_to_json(const TagHealth* health);
nlohmann::json scan_to_json(const ScanResult& scan, bool privileged);

} // namespace tagmem
