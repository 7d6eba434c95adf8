// SPDX-License-Identifier: Apache-2.0
// tagmem vm-attach --follow: after the attach, the host's memory errors in
// the tag reach the guest at the same offsets, and a tag that leaves the
// host is asked back from the guest (issue 18, docs/vm.md).
#pragma once

#include "query.hpp"
#include "uuid.hpp"

#include <cstdint>
#include <string>

namespace tagmem::cli {

struct FollowTarget {
    std::string qmp;       // the guest's QMP socket
    std::string device_id; // the tag's cxl-type3 device in the guest
    Uuid tag;
    std::uint64_t size = 0;
};

// Follows the host tagmemfs's watch stream until the tag leaves the host
// or is no longer ready there (conflict, disabled, system-ram, offered)
// (then releases it from the guest and returns 0) or tagmemfs cannot be
// reached (1). Each bad range of a `health` line (and of a tag already
// degraded when following starts) is injected once as poison on the
// guest's device at DPA = extent offset (0) + its offset.
int follow_attached(const QueryOptions& query, const FollowTarget& target);

} // namespace tagmem::cli
