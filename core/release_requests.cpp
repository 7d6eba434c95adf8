// SPDX-License-Identifier: Apache-2.0
#include "release_requests.hpp"

#include <algorithm>

namespace tagmem {

bool ReleaseRequests::note(const Uuid& tag, std::int64_t now) {
    if (since_.contains(tag))
        return false;
    if (since_.size() >= kMaxTags) {
        auto oldest =
            std::min_element(since_.begin(), since_.end(),
                             [](const auto& a, const auto& b) { return a.second < b.second; });
        since_.erase(oldest);
    }
    // 0 means "never" in TagRecord: a clock at the epoch still marks.
    since_.emplace(tag, std::max<std::int64_t>(now, 1));
    return true;
}

std::shared_ptr<const TagRecord> ReleaseRequests::shown(std::shared_ptr<const TagRecord> r) const {
    auto it = since_.find(r->tag);
    const std::int64_t want = it == since_.end() ? 0 : it->second;
    if (r->release_requested == want)
        return r;
    auto copy = std::make_shared<TagRecord>(*r);
    copy->release_requested = want;
    return copy;
}

} // namespace tagmem
