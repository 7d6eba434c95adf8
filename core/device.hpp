// SPDX-License-Identifier: Apache-2.0
// What the host says about one dax device, before any tag is assigned.
#pragma once

#include "config.hpp"
#include "interned.hpp"
#include "small_vec.hpp"
#include "sysfs_value.hpp"
#include "uuid.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace tagmem {

// devdax: bound to device_dax, mappable. system_ram: onlined through kmem,
// its contents were zeroed and belong to the page allocator. disabled: no
// driver bound (e.g. a DC region's seed device).
enum class DevMode : std::uint8_t { devdax, system_ram, disabled };
const char* to_string(DevMode mode);

// handoff: a VM guest's memory that its host named in the fw_cfg hand-off
// item (core/handoff.hpp).
enum class TagSource : std::uint8_t { dcd, nvdimm, config, handoff };
const char* to_string(TagSource source);

// An extent directory's name, extent<region>.<index>, kept as two numbers:
// 8 bytes instead of a 32-byte string, and every extent is held twice (the
// region's list and the device's).
struct ExtentName {
    std::uint32_t region = 0;
    std::uint32_t index = 0;
    // The kernel's spelling only: decimal, no sign or leading zero, 32 bits.
    // Anything else in a region directory is not an extent.
    static std::optional<ExtentName> parse(std::string_view name);
    std::string str() const;
    auto operator<=>(const ExtentName&) const = default;
    bool operator==(const ExtentName&) const = default;
    friend bool operator==(const ExtentName& a, std::string_view b) { return a.str() == b; }
    friend std::ostream& operator<<(std::ostream& out, const ExtentName& n) {
        return out << n.str();
    }
};

// One DCD extent of the device's region, in region offsets.
struct Extent {
    ExtentName name;
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
    std::optional<Uuid> tag;
    auto operator<=>(const Extent&) const = default;
};

// HMAT access coordinates of the target node (access0 class).
struct Performance {
    std::optional<std::uint64_t> read_latency_ns;
    std::optional<std::uint64_t> write_latency_ns;
    std::optional<std::uint64_t> read_bandwidth_mbps;
    std::optional<std::uint64_t> write_bandwidth_mbps;
    bool empty() const {
        return !read_latency_ns && !write_latency_ns && !read_bandwidth_mbps &&
               !write_bandwidth_mbps;
    }
    auto operator<=>(const Performance&) const = default;
};

// One tag of a VM hand-off (core/handoff.hpp): what the host says of the
// memory it gave this guest at [guest_start, guest_start + size) on guest
// NUMA node guest_node.
struct HandoffEntry {
    Uuid tag;
    std::string name;
    bool shareable = false;
    std::uint64_t size = 0;
    std::uint64_t guest_start = 0;
    int guest_node = -1;
    // What the host said of its own device, shown in the guest's metadata.
    std::string host_device;
    std::optional<int> host_numa_node;
    std::string host_source;
    Performance host_performance; // only the values the host knew
    // A tag that arrives as CXL dynamic capacity (vm-args --cxl): the
    // host's QEMU device id and the memdev's serial; no guest range.
    std::string cxl_device;
    std::optional<std::uint64_t> cxl_serial;
    // The device's CDAT is the host's (vm-args --cdat-dir), not QEMU's own.
    bool cxl_cdat_from_host = false;

    PhysRange range() const { return {guest_start, guest_start + size - 1}; }
    bool operator==(const HandoffEntry&) const = default;
};

// An immutable value that many devices share (one per NUMA node, say).
// Compared by content, so sharing never changes what equality means.
template <class T> class Shared {
  public:
    Shared() = default;
    explicit Shared(T value) : p_(std::make_shared<const T>(std::move(value))) {}
    const T& operator*() const { return p_ ? *p_ : none(); }
    const T* operator->() const { return &**this; }
    bool operator==(const Shared& o) const { return p_ == o.p_ || **this == *o; }

  private:
    static const T& none() {
        static const T none{};
        return none;
    }
    std::shared_ptr<const T> p_;
};

// As enumerated by libdaxctl.
struct DaxDevice {
    std::string name; // daxR.N
    int region_id = -1;
    int id = -1;
    DevNumber devno; // from /dev/<name>, as libdaxctl reads it
    std::uint64_t size = 0;
    std::uint64_t align = 0;
    std::uint64_t resource = 0;
    int target_node = -1;
    DevMode mode = DevMode::disabled;
    SmallVec<PhysRange> ranges; // physical ranges (mappings, else resource+size)

    std::string dev_path() const { return "/dev/" + name; }
    // libdaxctl's region path: the device directory's parent. Interned: the
    // thousands of devices of one region share one copy.
    const std::string& region_path() const { return region_; }
    void set_region_path(std::string_view path) { region_ = path; }
    // The canonical device directory (not stored: thousands of devices).
    std::string sysfs_path() const { return region_path() + "/" + name; }
    bool operator==(const DaxDevice&) const = default; // interned: equal paths, equal pointers

  private:
    Interned region_;
};

// What only some devices have. Kept behind one pointer (null for most
// devices): at 100,000 DCD devices these empty fields cost 56 bytes each.
struct DeviceNotes {
    std::optional<Uuid> infoblock_uuid;  // NVDIMM: nd_dax uuid
    std::string namespace_name;          // NVDIMM: namespaceR.N
    std::vector<std::string> warnings;   // non-fatal oddities
    std::optional<HandoffEntry> handoff; // the hand-off entry naming this device
    std::string enable_error;            // why enabling it as devdax failed
    // A vm-args --cxl tag's figures as the guest kernel read them from the
    // device's CDAT (the host put its own there): shown before the item's.
    Performance guest_cdat;
    bool empty() const {
        return !infoblock_uuid && namespace_name.empty() && warnings.empty() && !handoff &&
               enable_error.empty() && guest_cdat.empty();
    }
    bool operator==(const DeviceNotes&) const = default;
};

// A device after its tag and facts were read (core/probe.cpp). Fields are
// ordered largest first: one of these lives for every device.
struct ProbedDevice {
    DaxDevice dev;
    std::vector<Extent> extents;     // DCD: this tag's extents in the region
    Shared<Performance> performance; // of the target node: one copy per node
    Shared<DeviceNotes> notes;       // NVDIMM identity, warnings
    int numa_node = -1;
    TagSource source = TagSource::config;
    std::optional<Uuid> tag;
    bool operator==(const ProbedDevice&) const = default;
};

// A device that tagmem will not present, and why.
struct DeviceIssue {
    std::string device;
    std::string reason;
    auto operator<=>(const DeviceIssue&) const = default;
};

} // namespace tagmem
