// SPDX-License-Identifier: Apache-2.0
// Poison a CXL memory device reports (docs/health.md, "CXL poison").
//
// The kernel (cxl_core, Linux >= 6.4) emits one `cxl:cxl_poison` trace event
// per record of a memdev's poison list when root writes the memdev's
// trigger_poison_list (the Get Poison List mailbox command), and one per
// poison injected or cleared through debugfs. Its fields (memdev, region,
// trace_type, hpa, hpa_alias0 since Linux 6.15 for an extended linear cache,
// dpa, dpa_length) are read from the ring buffer's binary records by name
// (core/trace_decoder.hpp), never from trace_pipe's text, which is not ABI.
// hpa is ULLONG_MAX when no region maps the DPA: such a record hits no tag.
// The host physical range [hpa, hpa + dpa_length) is translated exactly as
// an NVDIMM bad range (physical_to_data); its hpa never leaves the daemon.
#pragma once

#include "dc_event.hpp"
#include "health.hpp"
#include "result.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace tagmem {

class HostOs;

enum class PoisonTraceType { list, inject, clear };

// One cxl_poison record, as much of it as tagmem uses.
struct PoisonRecord {
    std::string memdev; // memN
    std::string region; // regionN, or empty
    PoisonTraceType type = PoisonTraceType::list;
    std::uint64_t dpa = 0;
    std::uint64_t length = 0; // bytes, >= 1
    // The host physical ranges the DPA range is seen at: none when no
    // region maps it, two with an extended linear cache (hpa_alias0).
    std::vector<ByteRange> hpa;
};

// What one read of the trace gives (fs/cxl_poison_watch.hpp: the per-CPU
// ring buffers, decoded by core/trace_decoder.hpp).
struct PoisonBatch {
    std::vector<PoisonRecord> records;
    // cxl_dynamic_capacity records (kernels with the DCD series), in order.
    std::vector<DcCapacityEvent> dc_events;
    std::vector<std::string> malformed; // why, per record or page (never the hpa)
    std::size_t lost = 0;               // events the ring buffer overwrote unread
    bool ended = false;                 // end of file: no more events
    std::optional<Error> error;         // a failed read
    // Nothing came: the trace was read dry.
    bool empty() const {
        return records.empty() && dc_events.empty() && malformed.empty() && lost == 0;
    }
};

// Where the records come from; the daemon's is the tracefs instance, a
// unit test's a fake that emits a list when a trigger is written.
class PoisonSource {
  public:
    virtual ~PoisonSource() = default;
    // What the trace holds now, bounded; never blocks.
    virtual PoisonBatch read() = 0;
};

// What is known of every memdev's poison, by DPA. Bounded: at most
// kMaxMemdevs memdevs and kMaxRecords records per memdev are kept; records
// beyond are counted (dropped()) and not kept (a device flooding records
// must not grow the daemon without limit; its tags may then miss some).
//
// Not thread-safe: the daemon's event thread owns it.
class CxlPoisonTracker {
  public:
    static constexpr std::size_t kMaxMemdevs = 256;
    static constexpr std::size_t kMaxRecords = 4096;

    // A record from the trace: List and Inject add (or refresh) the DPA
    // range, Clear removes what it overlaps. Returns whether what tags can
    // see changed.
    bool apply(const PoisonRecord& record, std::int64_t now);

    // A fresh poison list of these memdevs is about to be read (their
    // trigger_poison_list was written): records of theirs that are not
    // listed again before end_listing() are dropped then. The kernel reads
    // the whole list inside the write, so the caller reads trace_pipe dry
    // between the two.
    void begin_listing(const std::vector<std::string>& memdevs);
    bool end_listing();
    // The list was not read whole (events lost, the trace not read dry):
    // every record stays as it was before begin_listing. Dropping the ones
    // not seen would erase known poison on a partial list.
    void abort_listing();

    // What the daemon does not know: `memdev`'s poison (or, with "", that
    // of any memdev: events lost outside a listing) may hold more than its
    // records. Returns whether what tags can see changed.
    bool set_incomplete(const std::string& memdev, std::string why);
    bool set_complete(const std::string& memdev);
    bool complete() const { return incomplete_.empty(); }
    // The host physical ranges of the CXL regions: the tags that an
    // incomplete list concerns are those whose memory lies in one. nullopt
    // (not known): every tag.
    void set_cxl_ranges(std::optional<std::vector<ByteRange>> ranges) {
        cxl_ranges_ = std::move(ranges);
    }

    // Memdevs that went away: their records go with them.
    bool keep_only(const std::set<std::string>& memdevs);

    // The bad ranges of a tag's single device (as HealthTracker's), and
    // why its list is incomplete if a memdev's is and the tag's memory lies
    // in a CXL region (or where the regions are is not known).
    TagHealth health_of(const TagRecord& record) const;

    std::size_t dropped() const { return dropped_; }
    std::size_t record_count() const;

  private:
    struct Known {
        std::uint64_t length = 0;
        std::vector<ByteRange> hpa;
        std::int64_t first_seen = 0;
        bool listed = false; // seen since begin_listing
    };
    using Memdev = std::map<std::uint64_t, Known>; // by DPA
    std::map<std::string, Memdev> memdevs_;
    std::set<std::string> listing_;
    std::map<std::string, std::string> incomplete_; // memdev ("" any): why
    std::optional<std::vector<ByteRange>> cxl_ranges_ = std::vector<ByteRange>{};
    std::size_t dropped_ = 0;
};

// The memdevs (memN) of a listing (list_poison below): each that has a
// trigger_poison_list (a device that cannot list its poison has none) is
// written "1", and the kernel emits its list as cxl_poison events inside
// the write.
struct PoisonListing {
    std::vector<std::string> listed; // triggered, and their list read whole
    std::vector<std::string> all;    // every memN on the bus, sorted
    std::vector<std::string> failed; // why, per failure
    // The bus was listed (or is absent: no memdev), so `all` is the truth;
    // false after a failure that says nothing of the memdevs (EMFILE...):
    // what is known of each is kept.
    bool bus_read = false;
};

// The host physical ranges of the bus's CXL regions (regionN/resource and
// size, root's); an error when the bus or a region cannot be read.
Result<std::vector<ByteRange>>
cxl_region_ranges(HostOs& os, const std::string& bus_dir = "/sys/bus/cxl/devices");

// The name of a daemon's tracefs instance, after its mount point: trace_pipe
// is a consuming read, so two daemons sharing one instance would split its
// records between them. "tagmem" for /run/tagmem (the default mount), else
// "tagmem-" and the path escaped as systemd escapes unit names ('/' as '-',
// anything but [A-Za-z0-9_.] as "_xNN"), or its hash when that is long.
std::string trace_instance_name(std::string_view mount_point);

// Lists every memdev's poison, one memdev at a time: the trace is read dry,
// the memdev's trigger_poison_list written (the kernel emits the whole list
// inside the write), and the trace read dry again before the next memdev,
// so that the ring buffer holds one device's list at most and each record
// is known to be of that listing. A list read whole replaces the memdev's
// records; a list with events lost, or not read dry within the bound, is
// tried `attempts` times in all and then left as it was: the memdev's
// records stay and the memdev is marked incomplete (never "ok" on a partial
// list). One attempt by default: a list that overflowed the ring buffer
// overflows it again, and each attempt is a mailbox command that blocks the
// event loop; the next SIGHUP or lost-events line lists again. Lost events outside a listing mark
// every memdev incomplete until the listings that follow read them all whole. `take` applies a
// batch to the tracker (and logs what the daemon logs); returns whether what tags see changed.
struct PoisonListingResult {
    PoisonListing listing;
    std::vector<std::string> incomplete; // memdevs whose list was not read whole
    bool changed = false;
};
PoisonListingResult list_poison(HostOs& os, PoisonSource& source, CxlPoisonTracker& tracker,
                                const std::function<bool(const PoisonBatch&)>& take,
                                const std::string& bus_dir = "/sys/bus/cxl/devices",
                                int attempts = 1);

} // namespace tagmem
