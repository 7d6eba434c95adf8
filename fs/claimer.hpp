// SPDX-License-Identifier: Apache-2.0
// tagmemfs's side of claiming offered CXL Dynamic Capacity (core/claim.hpp):
// which offered tags to claim, and when to try again.
//
// A claim is tried once per set of extents a tag is offered with: a failure
// (the kernel refused, no seed could be made) is shown in the tag's
// `reason` and not retried in a loop; new extents, a SIGHUP or `tagmem
// claim` try again.
#pragma once

#include "config.hpp"
#include "tag_record.hpp"

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace tagmem {

class HostOs;

class Claimer {
  public:
    struct Outcome {
        std::set<std::string> claimed; // dax devices that took a tag: read them again
        std::vector<std::shared_ptr<const TagRecord>> failed; // nothing took the tag: shown()
    };

    // Claims the offered tags of `delta` that `config` leaves to tagmemfs.
    Outcome claim(const TagDelta& delta, const Config& config, HostOs& os);

    // The record as shown: an offered tag whose claim failed says why.
    std::shared_ptr<const TagRecord> shown(std::shared_ptr<const TagRecord> r) const;

    // Everything offered is tried again (SIGHUP); what a failure showed
    // stays shown until a try ends otherwise.
    void forget() {
        for (auto& [tag, tried] : tried_)
            tried.again = true;
    }

  private:
    struct Tried {
        std::vector<Extent> extents; // what the claim was tried with
        std::string failure;         // empty: it succeeded
        bool again = false;          // try once more, even with the same extents
    };
    std::map<Uuid, Tried> tried_;
};

} // namespace tagmem
