// SPDX-License-Identifier: Apache-2.0
// tagmem claim <tag>: offered CXL Dynamic Capacity becomes the tag's devdax
// device by hand (docs/dcd.md), for tags tagmem.conf leaves to the
// administrator (claim = manual) or whose automatic claim failed.
// tagmem unclaim <tag>: the way back, so that a release the orchestrator
// asked for can go through.
#pragma once

#include "query.hpp"

#include <string>

namespace tagmem::cli {

int cmd_claim(const std::string& tag_text, const QueryOptions& opt);
int cmd_unclaim(const std::string& tag_text, const QueryOptions& opt);

} // namespace tagmem::cli
