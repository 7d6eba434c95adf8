// SPDX-License-Identifier: Apache-2.0
#include "claimer.hpp"

#include "claim.hpp"
#include "log.hpp"

#include <fmt/format.h>

namespace tagmem {

Claimer::Outcome Claimer::claim(const TagDelta& delta, const Config& config, HostOs& os) {
    Outcome out;
    for (const auto& tag : delta.removals)
        tried_.erase(tag);
    for (const auto& r : delta.upserts) {
        if (r->state != TagState::offered) {
            tried_.erase(r->tag);
            continue;
        }
        if (!claims_automatically(config, r->tag))
            continue;
        auto [slot, fresh] = tried_.try_emplace(r->tag);
        if (!fresh && slot->second.extents == r->offered_extents)
            continue; // tried with exactly these: said already
        slot->second = Tried{r->offered_extents, {}};
        auto device = claim_offered(*r, os);
        if (device) {
            log::info("tag {}: claimed its offered capacity as {}", r->tag.str(), *device);
            out.claimed.insert(*device);
            continue;
        }
        log::warning("tag {}: cannot claim its offered capacity: {}", r->tag.str(),
                     device.error().message);
        slot->second.failure = device.error().message;
        out.failed.push_back(r);
    }
    return out;
}

std::shared_ptr<const TagRecord> Claimer::shown(std::shared_ptr<const TagRecord> r) const {
    if (r->state != TagState::offered)
        return r;
    auto it = tried_.find(r->tag);
    if (it == tried_.end() || it->second.failure.empty() ||
        it->second.extents != r->offered_extents)
        return r;
    auto shown = std::make_shared<TagRecord>(*r);
    shown->reason = fmt::format("tagmemfs could not claim it: {} (`tagmem claim` or SIGHUP "
                                "tries again)",
                                it->second.failure);
    return shown;
}

} // namespace tagmem
