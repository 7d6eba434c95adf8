// SPDX-License-Identifier: Apache-2.0
// tagmem online / offline <tag> (docs/online.md).
#pragma once

#include "query.hpp"

#include "online.hpp"

#include <string>

namespace tagmem::cli {

// Scans the host under the configuration opt names (the default path when
// none), decides with core's policy, and changes the device or says why not.
int cmd_memory_change(MemoryChange change, const std::string& tag_text, const QueryOptions& opt);

} // namespace tagmem::cli
