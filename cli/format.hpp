// SPDX-License-Identifier: Apache-2.0
// Human-readable output of tagmem(1), rendered from the JSON form (core's
// scan_to_json/tag_to_json): the same whether the answer came from tagmemfs
// or from a scan of the host. Keys a reader may not see (ranges, for
// non-root callers of the daemon) are simply left out.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

namespace tagmem::cli {

std::string human_size(std::uint64_t bytes);
std::string format_table(const nlohmann::json& scan);
std::string format_tag(const nlohmann::json& tag);

} // namespace tagmem::cli
