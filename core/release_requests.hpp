// SPDX-License-Identifier: Apache-2.0
// Releases of CXL Dynamic Capacity the orchestrator asked for (docs/dcd.md,
// "Releasing a claimed tag").
//
// A Release Capacity event for extents that a dax device holds is refused
// by the kernel: it answers the device without releasing and leaves sysfs
// as it was, so nothing on the host shows that the memory was asked back.
// The kernel traces each DC event record (cxl:cxl_dynamic_capacity, with
// the extent's tag); the daemon follows that trace and keeps here which of
// its tags were asked back and when, so that `metadata` and the watch
// stream can say so and applications can let go. What is kept is what this
// daemon saw: the kernel keeps no record to read back after a restart.
//
// Not thread-safe: the daemon's event thread owns it.
#pragma once

#include "tag_record.hpp"
#include "uuid.hpp"

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>

namespace tagmem {

class ReleaseRequests {
  public:
    // More than any host has tags with DC capacity; past it, the oldest
    // request is forgotten (a device flooding events must not grow the
    // daemon without bound).
    static constexpr std::size_t kMaxTags = 65536;

    // A release (or forced release) of capacity with `tag` was asked for at
    // `now` (unix seconds). The first request's time is kept. Returns
    // whether what the tag shows changed.
    bool note(const Uuid& tag, std::int64_t now);
    // The tag is gone from the host: a later tag with the same UUID is a new
    // allocation, not asked back.
    void forget(const Uuid& tag) { since_.erase(tag); }
    bool requested(const Uuid& tag) const { return since_.contains(tag); }
    std::size_t size() const { return since_.size(); }

    // The record as shown: with the time its release was asked for (or
    // none). The same pointer when that is what it shows already.
    std::shared_ptr<const TagRecord> shown(std::shared_ptr<const TagRecord> r) const;

  private:
    std::map<Uuid, std::int64_t> since_;
};

} // namespace tagmem
