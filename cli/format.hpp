// SPDX-License-Identifier: Apache-2.0
// Human-readable output of tagmem(1). JSON output lives in the core.
#pragma once

#include "tag_record.hpp"

#include <cstdint>
#include <string>

namespace tagmem::cli {

std::string human_size(std::uint64_t bytes);
std::string format_table(const ScanResult& scan);
std::string format_tag(const TagRecord& tag);

} // namespace tagmem::cli
