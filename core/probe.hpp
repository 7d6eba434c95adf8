// SPDX-License-Identifier: Apache-2.0
// Reads what libdaxctl does not know about one device: its tag (DCD uuid
// attribute, or the NVDIMM namespace behind it), extents, NUMA and HMAT data;
// and checks that the device is what it claims to be before anything may
// present it.
#pragma once

#include "device.hpp"
#include "result.hpp"

#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tagmem {

class HostOs;

// What every device of one scan shares, read once: the extents of each DC
// region (a region can hold thousands of devices) and the dax major.
//
// A read that fails for a reason other than absence (is_transient) is not
// taken as the truth: what the cache held before its last clear() stands
// in for it, and failure() reports it, so that the caller retries.
class ScanCache {
  public:
    explicit ScanCache(HostOs& os);
    const Result<std::vector<Extent>>& extents(const std::string& region_path);
    std::optional<unsigned> dax_major() const { return dax_major_; }
    // HMAT data of a NUMA node: every device on the node shares one copy.
    const Shared<Performance>& performance(int node);
    // The first transient failure since the last call, if any.
    std::optional<Error> take_failure() { return std::exchange(failure_, std::nullopt); }
    // Regions whose extents failed to read since the last call: they hold
    // what was known before (or the error) and must be read again.
    std::set<std::string> take_stale_regions() { return std::exchange(stale_regions_, {}); }
    // The regions known before the last clear().
    std::vector<std::string> regions_before() const;

    // For a long-lived cache (hotplug): what is known, and updates to it.
    const std::map<std::string, Result<std::vector<Extent>>>& regions() const { return extents_; }
    void set_extents(const std::string& region_path, Result<std::vector<Extent>> extents);
    void forget_region(const std::string& region_path);
    // The extents of a region that carry a tag, in region order. Builds an
    // index of the region on first use (for a whole scan); a single lookup
    // without one (after a hotplug event) is a linear pass instead.
    std::vector<Extent> extents_of(const std::string& region_path, const Uuid& tag);
    std::vector<Extent> extents_of_unindexed(const std::string& region_path, const Uuid& tag);
    // Starts over, as a new cache would (a full rescan), keeping what it
    // knew to stand in for reads that fail. Fails, changing nothing, when
    // the dax major cannot be read.
    Status clear();
    // Drops what only a scan in progress needs (the per-tag extent index).
    void end_scan() { by_tag_.clear(); }
    // Drops what was known before the last clear(): held through a full
    // scan only, not as a second copy of every extent for good.
    void end_rescan() {
        extents_before_.clear();
        performance_before_.clear();
    }

  private:
    HostOs& os_;
    std::optional<unsigned> dax_major_;
    std::map<std::string, Result<std::vector<Extent>>> extents_;
    std::map<std::string, std::unordered_map<Uuid, std::vector<Extent>>> by_tag_;
    std::map<int, Shared<Performance>> performance_;
    // What was known before clear(), for reads that fail.
    std::map<std::string, std::vector<Extent>> extents_before_;
    std::map<int, Shared<Performance>> performance_before_;
    std::optional<Error> failure_;
    std::set<std::string> stale_regions_;
};

// A device in two steps. read_device does every per-device read and check
// and touches no cache, so it may run on another thread (a full scan reads
// devices while libdaxctl enumerates); complete_probe adds what the devices
// of a region or node share, from the cache. read_device fails (with the
// reason) when the device must be rejected: its device number disagrees
// with /dev/<name>, the node is not a character device of the dax major, or
// its tag attribute is malformed; or with a transient errno when a read
// failed (is_transient), which says nothing about the device.
struct DeviceReading {
    ProbedDevice probed;
    DeviceNotes notes;
    bool dc_region = false; // it sits in a CXL DAX region, which has extents
};
Result<DeviceReading> read_device(const DaxDevice& dev, HostOs& os,
                                  std::optional<unsigned> dax_major);
ProbedDevice complete_probe(DeviceReading reading, ScanCache& cache);

// The checks alone; the device number they verified, the one its node
// must be made with.
// Whether a dax device's region path (the parent of its sysfs directory)
// is a CXL DAX region, which may hold DC extents: the kernel names those
// devices dax_regionN, and no other dax region is so named.
bool is_dc_region_path(std::string_view region_path);

Result<DevNumber> verify_device_node(const DaxDevice& dev, HostOs& os,
                                     std::optional<unsigned> dax_major);

// Extents of a DC region (empty for other regions), in region order.
Result<std::vector<Extent>> read_region_extents(const std::string& region_path, HostOs& os);
// One extent directory of a region.
Result<Extent> read_extent(const std::string& region_path, const std::string& name, HostOs& os);
void sort_extents(std::vector<Extent>& extents);

Result<Performance> read_node_performance(int node, HostOs& os);

} // namespace tagmem
