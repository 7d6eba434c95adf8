// SPDX-License-Identifier: Apache-2.0
// The JSON form of tags and scans. Keys are stable (documented in
// tagmem(1)); the `metadata` file of tagmemfs is exactly tag_to_json().
#pragma once

#include "tag_record.hpp"

#include <nlohmann/json.hpp>

namespace tagmem {

nlohmann::json tag_to_json(const TagRecord& tag);
nlohmann::json scan_to_json(const ScanResult& scan);

} // namespace tagmem
