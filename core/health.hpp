// SPDX-License-Identifier: Apache-2.0
// Memory errors inside a tag's memory (docs/health.md).
//
// Source: the NVDIMM bus's bad ranges, regionN/badblocks, which the kernel
// fills from address range scrubs and from machine checks in an NVDIMM range
// (nfit_handle_mce) and raises a sysfs notification on. Each line is
// "<sector> <count>": 512-byte sectors relative to the region's start
// (regionN/resource, a physical address, root-only).
//
// Translation: a bad range is made physical (region start + sector * 512),
// then intersected with the physical ranges of each tag's device (its dax
// mapping ranges, in the order they make up the device: the tag's `data` is
// their concatenation). The namespace's place in the region and the info
// block before the device's data need no arithmetic of their own: the
// device's ranges already start after them. What a tag's users see is only
// offsets within `data`; the physical addresses stay in the daemon.
//
// tagmem never clears errors or rewrites memory: it reads badblocks only.
#pragma once

#include "config.hpp"
#include "result.hpp"
#include "small_vec.hpp"

#include <cstdint>
#include <ctime>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tagmem {

class HostOs;
struct TagRecord;

inline constexpr std::uint64_t kBadblockSectorSize = 512;

// One line of a badblocks attribute.
struct SectorRange {
    std::uint64_t sector = 0;
    std::uint64_t count = 0;
    auto operator<=>(const SectorRange&) const = default;
};

// The kernel's badblocks show stops at a page: sysfs hands out at most
// PAGE_SIZE - 1 bytes, the last line cut wherever the page ended.
inline constexpr std::size_t kBadblocksPage = 4096;

struct BadblocksList {
    std::vector<SectorRange> ranges;
    // The text filled the page: ranges past it exist or may exist, and
    // nothing says which (the list is not "ok" then).
    bool truncated = false;
};

// The whole attribute: "<sector> <count>\n" per line, both decimal, count
// at least 1, nothing else (no blank line, sign, leading zero, hex, or
// trailing blank). Empty text is no bad range. Any malformed line fails the
// whole (EINVAL, naming the line): half a list must not pass for all of it.
// Text of page_size - 1 bytes or more is what the kernel cut at the page:
// its complete lines are taken (each as strictly) and the list is marked
// truncated; the cut line at its end is dropped.
Result<BadblocksList> parse_badblocks(std::string_view text,
                                      std::size_t page_size = kBadblocksPage);

// A half-open byte range [start, start + length), length > 0; start +
// length may be 2^64 exactly (end() saturates there: use length).
struct ByteRange {
    std::uint64_t start = 0;
    std::uint64_t length = 0;
    auto operator<=>(const ByteRange&) const = default;
};

// The physical bytes of a region's bad range: nullopt when it lies wholly
// outside [region_start, region_start + region_size); clipped to the region
// when it straddles its end. Overflow-safe: sector * 512 past 2^64 is
// outside every region.
std::optional<ByteRange> region_range_to_physical(std::uint64_t region_start,
                                                  std::uint64_t region_size, SectorRange bad);

// The parts of a physical range that fall inside a device whose data is the
// concatenation of `ranges` (inclusive physical ranges, in data order), as
// offsets within the data, in offset order; adjacent parts are merged.
// Empty when it misses the device.
std::vector<ByteRange> physical_to_data(const SmallVec<PhysRange>& ranges, ByteRange bad);

// A bad range of a tag, as its users may see it.
struct BadRange {
    std::uint64_t offset = 0; // within the tag's data
    std::uint64_t length = 0;
    std::int64_t first_seen = 0; // wall clock, seconds since the epoch (UTC)
    auto operator<=>(const BadRange&) const = default;
};

// A tag's health. "ok" only when every error source that may cover the
// tag's memory was read completely and lists nothing in it: a consumer that
// sees "ok" may put data there. A source read only in part (a badblocks
// list longer than a page, trace events lost) says why in `incomplete`:
// the status is then "incomplete" unless known bad ranges make it
// "degraded" (which still carries the reasons: more may be bad).
struct TagHealth {
    std::vector<BadRange> bad;           // by offset
    std::vector<std::string> incomplete; // why the list may be partial; sorted
    bool degraded() const { return !bad.empty(); }
    bool ok() const { return bad.empty() && incomplete.empty(); }
    const char* status() const {
        return degraded() ? "degraded" : incomplete.empty() ? "ok" : "incomplete";
    }
    bool operator==(const TagHealth&) const = default;
};

// "2026-12-01T19:05:00Z".
std::string iso8601_utc(std::int64_t seconds);

// What is known of the bad ranges of every NVDIMM region, kept up to date
// by re-reading a region's badblocks (at a rescan, or when the kernel
// notifies it). A read that fails for a reason other than the region's
// absence, or returns malformed text, keeps what was last known: an
// unreadable list is neither "healthy" nor "gone".
//
// Not thread-safe: the daemon's event thread owns it.
class HealthTracker {
  public:
    // /sys/bus/nd/devices by default; every read goes through os.
    explicit HealthTracker(HostOs& os, std::string bus_dir = "/sys/bus/nd/devices");

    // Lists the bus's regions and reads each one's place and badblocks.
    // Returns whether any region's bad ranges changed. Failures are kept
    // (see failures()) and the last known state stands.
    bool rescan(std::int64_t now);
    // A region's badblocks text, read by the caller (from the fd it polls):
    // nullopt = the read failed with `err`.
    bool update_region(const std::string& region, const Result<std::string>& text,
                       std::int64_t now);

    // The regions known, by name (regionN), and their badblocks paths.
    std::vector<std::string> regions() const;
    std::string badblocks_path(const std::string& region) const;

    // The health of a tag: its single device's data against every known
    // bad range. A record without one device is ok. A region whose list was
    // cut at the page, or whose last read failed, makes every tag whose
    // memory lies in it incomplete (the reason names the region).
    TagHealth health_of(const TagRecord& record) const;

    // What failed in the last reads (region: why), for the log.
    const std::map<std::string, std::string>& failures() const { return failures_; }

  private:
    struct Known {
        ByteRange phys;
        std::int64_t first_seen = 0;
    };
    struct Region {
        std::uint64_t start = 0;
        std::uint64_t size = 0;
        std::vector<Known> bad; // by physical start
        bool truncated = false; // the last list read filled its page
    };
    bool apply(const std::string& name, Region& region, const std::string& text, std::int64_t now);
    Result<Region> read_place(const std::string& name);

    HostOs& os_;
    std::string bus_dir_;
    std::map<std::string, Region> regions_;
    std::map<std::string, std::string> failures_;
};

} // namespace tagmem
