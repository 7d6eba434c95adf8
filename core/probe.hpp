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
#include <string>
#include <unordered_map>
#include <vector>

namespace tagmem {

class HostOs;

// What every device of one scan shares, read once: the extents of each DC
// region (a region can hold thousands of devices) and the dax major.
class ScanCache {
  public:
    explicit ScanCache(HostOs& os);
    const Result<std::vector<Extent>>& extents(const std::string& region_path);
    std::optional<unsigned> dax_major() const { return dax_major_; }
    // HMAT data of a NUMA node: every device on the node shares one copy.
    const Shared<Performance>& performance(int node);

    // For a long-lived cache (hotplug): what is known, and updates to it.
    const std::map<std::string, Result<std::vector<Extent>>>& regions() const { return extents_; }
    void set_extents(const std::string& region_path, Result<std::vector<Extent>> extents);
    void forget_region(const std::string& region_path);
    // The extents of a region that carry a tag, in region order. Builds an
    // index of the region on first use (for a whole scan); a single lookup
    // without one (after a hotplug event) is a linear pass instead.
    std::vector<Extent> extents_of(const std::string& region_path, const Uuid& tag);
    std::vector<Extent> extents_of_unindexed(const std::string& region_path, const Uuid& tag);
    // Starts over, as a new cache would (a full rescan).
    void clear();
    // Drops what only a scan in progress needs (the per-tag extent index).
    void end_scan() { by_tag_.clear(); }

  private:
    HostOs& os_;
    std::optional<unsigned> dax_major_;
    std::map<std::string, Result<std::vector<Extent>>> extents_;
    std::map<std::string, std::unordered_map<Uuid, std::vector<Extent>>> by_tag_;
    std::map<int, Shared<Performance>> performance_;
};

// Fails (with the reason) when the device must be rejected: its device number
// disagrees with /dev/<name>, the node is not a character device of the dax
// major, or its tag attribute is malformed.
Result<ProbedDevice> probe_device(const DaxDevice& dev, HostOs& os, ScanCache& cache);

// probe_device in two steps. read_device does every per-device read and
// check and touches no cache, so it may run on another thread (a full scan
// reads devices while libdaxctl enumerates); complete_probe adds what the
// devices of a region or node share, from the cache.
struct DeviceReading {
    ProbedDevice probed;
    DeviceNotes notes;
    bool dc_region = false; // the device has a uuid attribute: its region has extents
};
Result<DeviceReading> read_device(const DaxDevice& dev, HostOs& os,
                                  std::optional<unsigned> dax_major);
ProbedDevice complete_probe(DeviceReading reading, ScanCache& cache);

// The checks alone, shared by probe_device and whoever re-validates a node.
Status verify_device_node(const DaxDevice& dev, HostOs& os, std::optional<unsigned> dax_major);

// Extents of a DC region (empty for other regions), in region order.
Result<std::vector<Extent>> read_region_extents(const std::string& region_path, HostOs& os);
// One extent directory of a region.
Result<Extent> read_extent(const std::string& region_path, const std::string& name, HostOs& os);
void sort_extents(std::vector<Extent>& extents);

Performance read_node_performance(int node, HostOs& os);

} // namespace tagmem
