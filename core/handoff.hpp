// SPDX-License-Identifier: Apache-2.0
// The guest side of a VM hand-off (issue 12, docs/vm.md): the host passes
// each tag's metadata beside its memory in one QEMU fw_cfg item, and the
// guest kernel makes a devdax device (dax_hmem) of each tag's range. This
// reads that item and says which dax device each entry describes.
//
// The item is JSON (docs/vm.md has the format):
//   {"format": "tagmem-handoff", "version": 1, "tags": [
//     {"tag": "<uuid>", "name": "...", "shareable": true, "size": N,
//      "guest_start": A, "guest_node": n,
//      "host": {"device": "dax0.0", "numa_node": 1, "source": "nvdimm",
//               "performance": {"read_latency_ns": ..., ...}}}],
//    "cxl": {"make_dc_regions": true, "tags": [
//     {"tag": "<uuid>", "name": "...", "shareable": true, "size": N,
//      "device": "<QEMU id>", "serial": S, "region": 0, "host": {...}}]}}
// ("cxl" is optional: the mechanism of vm-args --cxl, docs/vm.md.)
// Parsing is strict: one malformed entry refuses the whole item (a
// half-read item could hand a tag to the wrong memory), with a message
// that names the entry by index and tag but never an address (the item is
// root-only; messages are not). Unknown keys are ignored.
#pragma once

#include "device.hpp"
#include "result.hpp"
#include "uuid.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tagmem {

class HostOs;

inline constexpr const char* kHandoffPath =
    "/sys/firmware/qemu_fw_cfg/by_name/opt/org.tagmem/tags/raw";
inline constexpr const char* kHandoffItem = "fw_cfg opt/org.tagmem/tags";
// Made by the qemu_fw_cfg driver's probe and removed when it unbinds (the
// module's load and unload bind and unbind it): present exactly while the
// guest's items can be read.
inline constexpr const char* kFwCfgByName = "/sys/firmware/qemu_fw_cfg/by_name";
inline constexpr std::size_t kHandoffMaxBytes = 64 * 1024;

// HandoffEntry is in device.hpp (a device carries the one that names it).

struct Handoff {
    std::vector<HandoffEntry> entries;
    // "cxl": tags that arrive later as tagged CXL dynamic capacity (added by
    // the host over QMP), matched by their tag once a device carries it.
    std::vector<HandoffEntry> cxl;
    // The host asks the guest to make the DC regions its capacity arrives in.
    bool make_dc_regions = false;

    const HandoffEntry* match_cxl(const Uuid& tag) const;

    // The entry whose range is exactly the device's one physical range and
    // whose node is the device's target node; null when none is.
    const HandoffEntry* match(const DaxDevice& dev) const;
    bool operator==(const Handoff&) const = default;
};

// EINVAL with the reason when the text is not a valid hand-off item.
Result<Handoff> parse_handoff(std::string_view text);

// The item of this guest: an empty hand-off when the fw_cfg driver is
// bound and there is no such item; ENODEV when the driver is not bound (not
// a QEMU guest, or qemu_fw_cfg not loaded, or unloaded since): whether
// there is an item cannot be known; EINVAL when it is malformed; other
// errors as reading gave them (is_transient).
Result<Handoff> read_handoff(HostOs& os);

// `tagmem online` of a tag leaves a mark here (a directory named by the
// tag, on /run's tmpfs: gone at the next boot) before it unbinds
// device_dax, and `tagmem offline` removes it. tagmemfs's hand-off binds
// device_dax to a disabled device it was handed, but never to a marked
// one: an administrator's explicit online is not undone, not even by a
// daemon restarted while the device was between drivers (docs/vm.md).
inline constexpr const char* kExplicitOnlineDir = "/run/tagmem.online";
Status mark_explicit_online(const Uuid& tag, HostOs& os);
Status clear_explicit_online(const Uuid& tag, HostOs& os); // no mark: Ok
// Whether the tag is marked; an error when that cannot be known (then the
// device is not enabled now, and it is asked again at the retry).
Result<bool> is_explicitly_online(const Uuid& tag, HostOs& os);

} // namespace tagmem
