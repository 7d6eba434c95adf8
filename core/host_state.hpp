// SPDX-License-Identifier: Apache-2.0
// Everything tagmem knows about the host, kept up to date piece by piece.
//
// A full rescan enumerates with libdaxctl; after that, a uevent names one
// device and refresh_device() re-reads only it, and poll_extents() re-reads
// only the extent directories of DC regions that changed. Each returns the
// tags whose records changed, so the filesystem touches nothing else: on a
// host with 10,000 tags one event costs one device's reads.
//
// Not thread-safe: one thread (the daemon's event thread) owns it.
#pragma once

#include "config.hpp"
#include "probe.hpp"
#include "result.hpp"
#include "tag_record.hpp"

#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tagmem {

class HostOs;

class HostState {
  public:
    explicit HostState(HostOs& os);

    // Enumerates the whole host with libdaxctl under this configuration.
    // Fails only when libdaxctl cannot start (the state is then unchanged).
    Result<TagDelta> rescan(const Config& config);

    // Devices were added, changed or removed (uevents named them): re-read
    // them alone, and the extent lists of the DC regions they sit in (a
    // device released with its extents then vanishes in one step).
    TagDelta refresh(const std::set<std::string>& names);
    TagDelta refresh_device(const std::string& name) { return refresh({name}); }

    // Devices whose sysfs path lies under a path (an nd or cxl uevent).
    std::vector<std::string> devices_under(const std::string& sysfs_path) const;

    // Re-reads the extent lists of the DC regions; only new extent
    // directories are read, so an unchanged region costs one readdir.
    TagDelta poll_extents();
    bool has_dc_regions() const;

    ScanResult snapshot() const;
    std::size_t tag_count() const;

  private:
    void forget_device(const std::string& name, std::set<Uuid>& touched);
    // early: this device's reading taken ahead of libdaxctl, if any.
    void load_device(const DaxDevice& dev, std::set<Uuid>& touched,
                     Result<DeviceReading>* early = nullptr);
    static void touch_tags_of(const std::vector<Extent>& extents, std::set<Uuid>& touched);
    TagDelta finish(const std::set<Uuid>& touched);
    void refresh_one(const std::string& name, std::set<Uuid>& touched,
                     std::set<std::string>& regions);
    void poll_region(const std::string& region, std::set<Uuid>& touched);
    void drop_extents(const std::string& region, const std::vector<ExtentName>& names,
                      std::set<Uuid>& touched);
    // Re-probes the region's devices that carry one of these tags.
    void reload_devices(const std::string& region, const std::set<Uuid>& tags,
                        std::set<Uuid>& touched);
    using Signature = std::vector<std::pair<ExtentName, std::uint64_t>>; // sorted
    // A region's extent directories by name and inode; nullopt: region gone.
    std::optional<Signature> signature_of(const std::string& region);
    TagDelta rebuild(const std::set<Uuid>& touched);

    HostOs& os_;
    Config config_;
    ScanCache cache_;
    // Probed fine, by name; the key views the device's own name (no copy:
    // at 100,000 devices every node counts).
    std::unordered_map<std::string_view, std::shared_ptr<const ProbedDevice>> devices_;
    std::map<std::string, DeviceIssue> rejected_;
    // One node per tag: the devices claiming it (a small vector, as almost
    // every tag has one) and the record last published for it.
    struct TagSlot {
        SmallVec<std::shared_ptr<const ProbedDevice>> devices; // sorted by name
        std::shared_ptr<const TagRecord> record;
    };
    std::unordered_map<Uuid, TagSlot> tags_;
    // What each DC region's directory held when its extents were read.
    std::map<std::string, Signature> signatures_;
    std::map<std::string, std::uint64_t> region_nlink_; // when its signature was taken
    unsigned polls_ = 0;
};

} // namespace tagmem
