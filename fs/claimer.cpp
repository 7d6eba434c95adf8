// SPDX-License-Identifier: Apache-2.0
#include "claimer.hpp"

#include "claim.hpp"
#include "log.hpp"

#include <fmt/format.h>

#include <cerrno>

namespace tagmem {
namespace {

bool out_of_resources(int err) {
    return err == EMFILE || err == ENFILE || err == ENOMEM || err == ENOBUFS || err == EAGAIN ||
           err == EINTR;
}

} // namespace

Claimer::Outcome Claimer::claim(const TagDelta& delta, const Config& config, HostOs& os) {
    Outcome out;
    for (const auto& tag : delta.removals)
        tried_.erase(tag);
    for (const auto& r : delta.upserts) {
        if (r->state != TagState::offered) {
            // A device that took the tag but has no driver keeps the
            // failure as its reason until it is served (or gone).
            if (r->state != TagState::disabled)
                tried_.erase(r->tag);
            continue;
        }
        if (!claims_automatically(config, r->tag))
            continue;
        auto [slot, fresh] = tried_.try_emplace(r->tag);
        if (!fresh && !slot->second.again && slot->second.extents == r->offered_extents)
            continue; // tried with exactly these: said already
        const Tried before = slot->second;
        slot->second = Tried{r->offered_extents, {}, false};
        auto claimed = claim_offered(*r, os);
        if (!claimed && out_of_resources(claimed.error().code)) {
            // The daemon's own shortage (a user holding it at its fd limit)
            // says nothing of the tag: what was shown stands, and the next
            // publish of the tag or a SIGHUP tries again.
            log::debug("tag {}: claim postponed: {}", r->tag.str(), claimed.error().message);
            if (fresh)
                tried_.erase(slot);
            else
                slot->second = Tried{before.extents, before.failure, true};
            continue;
        }
        if (claimed && claimed->bound) {
            log::info("tag {}: claimed its offered capacity as {}", r->tag.str(), claimed->device);
            out.claimed.insert(claimed->device);
            continue;
        }
        const Error& why = claimed ? claimed->bound.error() : claimed.error();
        log::warning("tag {}: cannot claim its offered capacity: {}", r->tag.str(), why.message);
        slot->second.failure = why.message;
        if (claimed)
            out.claimed.insert(claimed->device); // it took the tag: read it again
        else
            out.failed.push_back(r);
    }
    return out;
}

std::shared_ptr<const TagRecord> Claimer::shown(std::shared_ptr<const TagRecord> r) const {
    if (r->state != TagState::offered && r->state != TagState::disabled)
        return r;
    auto it = tried_.find(r->tag);
    if (it == tried_.end() || it->second.failure.empty() ||
        (r->state == TagState::offered && it->second.extents != r->offered_extents))
        return r;
    auto shown = std::make_shared<TagRecord>(*r);
    shown->reason = fmt::format("tagmemfs could not claim it: {} (`tagmem claim` or SIGHUP "
                                "tries again)",
                                it->second.failure);
    return shown;
}

} // namespace tagmem
