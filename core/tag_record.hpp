// SPDX-License-Identifier: Apache-2.0
// The result of a scan: one record per tag, plus what was left out and why.
#pragma once

#include "device.hpp"
#include "health.hpp"

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tagmem {

// ready: one devdax device, its data may be mapped.
// system_ram: onlined as memory: zeroed by onlining, never the tag's data.
// disabled: no driver bound. conflict: several devices claim the tag.
// offered: DCD extents carry the tag but no dax device has claimed them.
// no_node: ready on the host, but tagmemfs could not make the device node
// behind `data` (it retries); only the daemon sets it.
enum class TagState : std::uint8_t { ready, system_ram, disabled, conflict, offered, no_node };
const char* to_string(TagState state);

// Who may open the tag's data: `data` is a symlink to a device node on
// tagmemfs's own read-only tmpfs (fs/node_dir.hpp), made with this owner,
// group and mode, and the kernel checks them at open() like any device
// node's. The default is as strict as /dev/dax*.
struct Access {
    uid_t uid = 0;
    gid_t gid = 0;
    mode_t mode = 0600;
    Interned owner = "root"; // as configured, for display
    Interned group = "root";
    auto operator<=>(const Access&) const = default;
};

// Where the shareable flag came from: DCD v11 has no attribute for it, so
// configuration or the default (true for a DCD tag, false for others).
// handoff: a VM guest's tag, as its host said (core/handoff.hpp).
enum class ShareableFrom : std::uint8_t { default_value, config, handoff };
const char* to_string(ShareableFrom from);

struct TagRecord {
    Uuid tag;
    Interned name; // from configuration, may be empty
    TagSource source = TagSource::config;
    TagState state = TagState::ready;
    bool shareable = false;
    ShareableFrom shareable_from = ShareableFrom::default_value;
    std::string reason; // why it is not ready
    // Exactly one unless in conflict or offered. Shared with HostState, which
    // keeps every device it probed: a record costs no second copy.
    SmallVec<std::shared_ptr<const ProbedDevice>> devices;
    std::vector<Extent> offered_extents; // offered: the extents carrying the tag
    Access access;
    // Memory errors in the tag's data (core/health.hpp); null: none known.
    // Set by the daemon over what the scan produced.
    std::shared_ptr<const TagHealth> health;
    // When the orchestrator asked for the tag's capacity back (a DCD
    // Release Capacity event naming the tag; unix seconds, 0: never). The
    // kernel refuses a release while a dax device holds the capacity and
    // keeps no trace of the request, so only the daemon that saw the event
    // knows (fs/release_requests.hpp). Set by the daemon, as health.
    std::int64_t release_requested = 0;

    bool usable() const { return state == TagState::ready; }
    // Equal content (devices compared by value, not by pointer).
    bool operator==(const TagRecord& o) const;
    const ProbedDevice* device() const { return devices.size() == 1 ? devices[0].get() : nullptr; }
};

// The records to (re)publish and the tags that are gone.
struct TagDelta {
    std::vector<std::shared_ptr<const TagRecord>> upserts;
    std::vector<Uuid> removals;
    bool empty() const { return upserts.empty() && removals.empty(); }
};

struct UntaggedDevice {
    std::string device;
    std::uint64_t size = 0;
    DevMode mode = DevMode::disabled;
    int target_node = -1;
    SmallVec<PhysRange> ranges;
};

struct ScanResult {
    std::vector<TagRecord> tags; // sorted by tag
    std::vector<UntaggedDevice> untagged;
    std::vector<DeviceIssue> rejected; // devices tagmem refuses to present
    std::vector<std::string> config_errors;

    const TagRecord* find(const Uuid& tag) const;
};

} // namespace tagmem
