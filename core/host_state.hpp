// SPDX-License-Identifier: Apache-2.0
// Everything tagmem knows about the host, kept up to date piece by piece.
//
// A full rescan enumerates with libdaxctl; after that, a uevent names one
// device and refresh() re-reads only it, and poll_extents() re-reads
// only the extent directories of DC regions that changed. Each returns the
// tags whose records changed, so the filesystem touches nothing else: on a
// host with 10,000 tags one event costs one device's reads.
//
// A read that fails for a reason other than absence (is_transient: EMFILE,
// ENOMEM, EIO, ...) changes nothing: the device, region or tag keeps what
// was last read of it, and needs_retry() asks the owner to call retry()
// later. Only "gone" (is_gone) or a verdict of tagmem's own checks removes
// or changes a tag.
//
// Not thread-safe: one thread (the daemon's event thread) owns it.
#pragma once

#include "config.hpp"
#include "handoff.hpp"
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
    // Fails when libdaxctl cannot start or the dax major cannot be read
    // (the state is then unchanged, and a retry is asked for). A device
    // known before that the scan did not list is removed only when its bus
    // entry is confirmed gone: libdaxctl drops devices it fails to read.
    Result<TagDelta> rescan(const Config& config);

    // Devices were added, changed or removed (uevents named them): re-read
    // them alone, and the extent lists of the DC regions they sit in (a
    // device released with its extents then vanishes in one step).
    TagDelta refresh(const std::set<std::string>& names);

    // Reads that failed for a reason other than absence are pending: their
    // last known state stands until retry() reads them cleanly.
    bool needs_retry() const;
    // The full rescan has to be redone (it failed, or could not list the
    // bus): the owner calls rescan() instead of retry().
    bool needs_rescan() const { return rescan_pending_; }
    // What failed first, for the one log line.
    std::string retry_reason() const;
    TagDelta retry();

    // Devices whose sysfs path lies under a path (an nd or cxl uevent).
    std::vector<std::string> devices_under(const std::string& sysfs_path) const;

    // Re-reads the extent lists of the DC regions; only new extent
    // directories are read, so an unchanged region costs one readdir.
    TagDelta poll_extents();
    bool has_dc_regions() const;

    ScanResult snapshot() const;
    std::size_t tag_count() const;

    // Of these dax devices, the ones the hand-off item names. Such a device
    // starts without a driver (dax_hmem leaves it disabled): no bind event
    // comes until tagmem enables it, so its add event must be acted on.
    // Loaded after tagmemfs started (a late modprobe dax_hmem), it would be
    // missed otherwise. Nothing is read when the item names no tag.
    std::set<std::string> handed_over(const std::set<std::string>& names);

  private:
    // What was known of a device before it was read again.
    struct Previous {
        std::shared_ptr<const ProbedDevice> device;
        std::optional<DeviceIssue> rejection;
    };
    Previous previous_of(const std::string& name) const;
    void forget_device(const std::string& name, std::set<Uuid>& touched);
    void add_device(std::shared_ptr<const ProbedDevice> device, std::set<Uuid>& touched);
    // Reading the device failed (is_transient): what was known stands.
    void keep(const std::string& name, const Previous& previous, Error why,
              std::set<Uuid>& touched);
    // early: this device's reading taken ahead of libdaxctl, if any.
    void load_device(const DaxDevice& dev, std::set<Uuid>& touched, const Previous& previous,
                     Result<DeviceReading>* early = nullptr);
    void note_failure(const Error& why);
    void refresh_into(const std::set<std::string>& names, std::set<Uuid>& touched);
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
    // A region's extent directories by name and inode.
    Result<Signature> signature_of(const std::string& region);
    TagDelta rebuild(const std::set<Uuid>& touched);

    // A VM guest's hand-off item (core/handoff.hpp), read at each rescan.
    // QEMU's fw_cfg items do not change while the guest runs: while the
    // fw_cfg driver is not bound, the item last read stands.
    void read_handoff_item();

    // The device named by a hand-off entry, enabled as devdax if it is
    // disabled (once per device: an admin who disables it later is obeyed).
    DaxDevice enable_for_handoff(const DaxDevice& dev, const HandoffEntry& entry,
                                 std::string& enable_error);
    // The hand-off entry's tag, name, node and performance on the device.
    static void apply_handoff(DeviceReading& reading, const HandoffEntry& entry,
                              const Config& config);

    HostOs& os_;
    Config config_;
    Handoff handoff_;
    std::optional<std::string> handoff_error_; // the item is malformed
    std::set<std::string> enable_tried_;       // sysfs paths
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
    // Reads to retry (see needs_retry): devices by name, DC regions, tags
    // whose owner or group could not be looked up.
    std::map<std::string, Error> pending_;
    std::set<std::string> pending_regions_;
    std::set<Uuid> pending_tags_;
    bool rescan_pending_ = false;
    std::optional<Error> first_failure_; // since nothing was pending
};

} // namespace tagmem
