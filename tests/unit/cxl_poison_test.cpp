// SPDX-License-Identifier: Apache-2.0
// CXL poison: the tracker's listing, clearing, bounds and the translation of a
// record's host physical range to a tag's offsets at its device's range
// boundaries (a DCD device of two extents). The decoder of the records:
// trace_decoder_test.cpp.
#include "cxl_poison.hpp"
#include "fake_host_os.hpp"
#include "tag_record.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <limits>

namespace tagmem {
namespace {

constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();

class PoisonTrackerTest : public ::testing::Test {
  protected:
    static constexpr std::uint64_t kBase = 0x10'0000'0000;
    static constexpr std::uint64_t GiB = 1ull << 30;
    void SetUp() override {
        a.tag = *Uuid::parse("aaaaaaaa-0000-4000-8000-00000000000a");
        auto dev = std::make_shared<ProbedDevice>();
        dev->dev.ranges.push_back({kBase, kBase + GiB - 1});
        dev->dev.ranges.push_back({kBase + 2 * GiB, kBase + 2 * GiB + GiB / 2 - 1});
        a.devices.push_back(dev);
        b.tag = *Uuid::parse("bbbbbbbb-0000-4000-8000-00000000000b");
        auto dev2 = std::make_shared<ProbedDevice>();
        dev2->dev.ranges.push_back({kBase + GiB, kBase + GiB + GiB / 4 - 1});
        b.devices.push_back(dev2);
    }
    static PoisonRecord rec(std::uint64_t hpa, std::uint64_t length, std::uint64_t dpa,
                            PoisonTraceType type = PoisonTraceType::list,
                            std::string memdev = "mem0") {
        PoisonRecord r;
        r.memdev = std::move(memdev);
        r.region = "region0";
        r.type = type;
        r.dpa = dpa;
        r.length = length;
        if (hpa != kMax)
            r.hpa.push_back({hpa, length});
        return r;
    }
    TagRecord a, b;
};

TEST_F(PoisonTrackerTest, BoundaryOffsetsAtTheDevicesRanges) {
    CxlPoisonTracker t;
    // The first 64 bytes of the first extent, the last 64 of it, one
    // straddling the gap into tag B's extent, the first 64 of the second
    // extent and the last 64 of the device.
    EXPECT_TRUE(t.apply(rec(kBase, 64, 0), 10));
    EXPECT_TRUE(t.apply(rec(kBase + GiB - 64, 64, 0x1000), 11));
    EXPECT_TRUE(t.apply(rec(kBase + 2 * GiB - 64, 128, 0x2000), 12));
    EXPECT_TRUE(t.apply(rec(kBase + 2 * GiB, 64, 0x3000), 13));
    EXPECT_TRUE(t.apply(rec(kBase + 2 * GiB + GiB / 2 - 64, 64, 0x4000), 14));
    auto h = t.health_of(a);
    EXPECT_EQ(h.bad, (std::vector<BadRange>{{0, 64, 10},
                                            {GiB - 64, 64, 11},
                                            {GiB, 64, 12}, // the straddle's part in A
                                            {GiB, 64, 13},
                                            {GiB + GiB / 2 - 64, 64, 14}}));
    // The straddle's first half lies between the extents, past B's 256 MiB.
    EXPECT_FALSE(t.health_of(b).degraded());
    // Just outside the device: before it, between the extents past B, after.
    CxlPoisonTracker out;
    EXPECT_TRUE(out.apply(rec(kBase - 64, 64, 0), 1));
    EXPECT_TRUE(out.apply(rec(kBase + GiB + GiB / 4, 64, 0x40), 1));
    EXPECT_TRUE(out.apply(rec(kBase + 2 * GiB + GiB / 2, 64, 0x80), 1));
    EXPECT_TRUE(out.apply(rec(kMax - 63, 64, 0xc0), 1));
    EXPECT_FALSE(out.health_of(a).degraded());
    EXPECT_FALSE(out.health_of(b).degraded());
    // Tag B's first byte.
    EXPECT_TRUE(out.apply(rec(kBase + GiB, 64, 0x100), 2));
    EXPECT_EQ(out.health_of(b).bad, (std::vector<BadRange>{{0, 64, 2}}));
}

TEST_F(PoisonTrackerTest, NoHpaHitsNoTag) {
    CxlPoisonTracker t;
    EXPECT_FALSE(t.apply(rec(kMax, 64, 0), 1)); // nothing a tag can see
    EXPECT_EQ(t.record_count(), 1u);
    EXPECT_FALSE(t.health_of(a).degraded());
}

TEST_F(PoisonTrackerTest, ListingReplacesTheOldList) {
    CxlPoisonTracker t;
    EXPECT_TRUE(t.apply(rec(kBase, 64, 0), 100));
    EXPECT_TRUE(t.apply(rec(kBase + 4096, 64, 0x1000), 100));
    EXPECT_TRUE(t.apply(rec(kBase + 8192, 64, 0, PoisonTraceType::list, "mem1"), 100));
    // mem0 listed again with only its first record: the second goes, and
    // the first keeps its first sighting; mem1 was not listed: kept.
    t.begin_listing({"mem0"});
    EXPECT_FALSE(t.apply(rec(kBase, 64, 0), 200));
    EXPECT_TRUE(t.end_listing());
    EXPECT_EQ(t.health_of(a).bad, (std::vector<BadRange>{{0, 64, 100}, {8192, 64, 100}}));
    // An empty list: all of mem0's go.
    t.begin_listing({"mem0", "mem1"});
    EXPECT_TRUE(t.apply(rec(kBase + 8192, 64, 0, PoisonTraceType::list, "mem1"), 300) == false);
    EXPECT_TRUE(t.end_listing());
    EXPECT_EQ(t.health_of(a).bad, (std::vector<BadRange>{{8192, 64, 100}}));
    // A memdev gone: its records too.
    EXPECT_TRUE(t.keep_only({"mem0"}));
    EXPECT_FALSE(t.health_of(a).degraded());
    EXPECT_EQ(t.record_count(), 0u);
}

TEST_F(PoisonTrackerTest, ClearRemovesWhatItOverlaps) {
    CxlPoisonTracker t;
    EXPECT_TRUE(t.apply(rec(kBase, 64, 0), 1));
    EXPECT_TRUE(t.apply(rec(kBase + 128, 64, 128), 1));
    EXPECT_TRUE(t.apply(rec(kBase + 128, 64, 128, PoisonTraceType::clear), 2));
    EXPECT_EQ(t.health_of(a).bad, (std::vector<BadRange>{{0, 64, 1}}));
    // On another memdev, or not overlapping: nothing.
    EXPECT_FALSE(t.apply(rec(kBase, 64, 0, PoisonTraceType::clear, "mem1"), 3));
    EXPECT_FALSE(t.apply(rec(kBase + 64, 64, 64, PoisonTraceType::clear), 3));
    EXPECT_EQ(t.record_count(), 1u);
}

TEST_F(PoisonTrackerTest, ARegionMadeSinceMovesTheRecord) {
    CxlPoisonTracker t;
    EXPECT_FALSE(t.apply(rec(kMax, 64, 0), 1));
    EXPECT_TRUE(t.apply(rec(kBase, 64, 0), 2)); // now mapped: seen, first seen kept
    EXPECT_EQ(t.health_of(a).bad, (std::vector<BadRange>{{0, 64, 1}}));
    EXPECT_FALSE(t.apply(rec(kBase, 64, 0), 3));
}

TEST_F(PoisonTrackerTest, BoundedAgainstAFlood) {
    CxlPoisonTracker t;
    for (std::uint64_t i = 0; i < CxlPoisonTracker::kMaxRecords + 100; ++i)
        t.apply(rec(kBase + i * 64, 64, i * 64), 1);
    EXPECT_EQ(t.record_count(), CxlPoisonTracker::kMaxRecords);
    EXPECT_EQ(t.dropped(), 100u);
    // A refresh of a kept record still works at the cap.
    EXPECT_FALSE(t.apply(rec(kBase, 64, 0), 2));
    for (std::size_t m = 1; m < CxlPoisonTracker::kMaxMemdevs + 10; ++m)
        t.apply(rec(kBase, 64, 0, PoisonTraceType::list, fmt::format("mem{}", m)), 1);
    EXPECT_EQ(t.dropped(), 110u);
    EXPECT_EQ(t.record_count(), CxlPoisonTracker::kMaxRecords + CxlPoisonTracker::kMaxMemdevs - 1);
}

// A trace instance as the kernel runs it for list_poison: a write of a
// memdev's trigger_poison_list emits that memdev's list inside the write,
// into a ring buffer of `ring` records; a list longer than that overwrites
// its oldest records and the next page then says how many were missed.
class FakeTrace : public PoisonSource {
  public:
    FakeTrace(fake::FakeHostOs& os, std::size_t ring) : os_(os), ring_(ring) {}
    std::map<std::string, std::vector<PoisonRecord>> lists; // what each memdev holds
    std::vector<PoisonRecord> pending;                      // emitted, not read
    std::size_t lost = 0;
    PoisonBatch read() override {
        // Writes since the last read: each triggered memdev's list.
        const auto& w = os_.writes();
        for (; seen_ < w.size(); ++seen_) {
            const auto& path = w[seen_].first;
            auto end = path.rfind("/trigger_poison_list");
            auto start = path.rfind('/', end - 1) + 1;
            for (const auto& r : lists[path.substr(start, end - start)]) {
                if (pending.size() == ring_) {
                    pending.erase(pending.begin()); // overwritten unread
                    ++lost;
                }
                pending.push_back(r);
            }
        }
        PoisonBatch b;
        b.lost = lost > 0 ? 1 : 0;
        lost = 0;
        // A bounded read: at most 8 records per call.
        auto n = std::min<std::size_t>(pending.size(), 8);
        b.records.assign(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(n));
        pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(n));
        return b;
    }

  private:
    fake::FakeHostOs& os_;
    std::size_t ring_;
    std::size_t seen_ = 0;
};

class ListPoisonTest : public PoisonTrackerTest {
  protected:
    static constexpr const char* kBus = "/sys/bus/cxl/devices";
    void SetUp() override {
        PoisonTrackerTest::SetUp();
        os.add_file(std::string(kBus) + "/mem0/trigger_poison_list", "");
        os.add_file(std::string(kBus) + "/mem1/trigger_poison_list", "");
        // Region 0 holds tags A and B.
        os.add_file(std::string(kBus) + "/region0/resource", fmt::format("{:#x}\n", kBase));
        os.add_file(std::string(kBus) + "/region0/size", fmt::format("{:#x}\n", 4 * GiB));
    }
    PoisonListingResult list(FakeTrace& trace) {
        return list_poison(os, trace, t, [&](const PoisonBatch& batch) {
            bool changed = false;
            for (const auto& r : batch.records)
                changed |= t.apply(r, now);
            return changed;
        });
    }
    fake::FakeHostOs os;
    CxlPoisonTracker t;
    std::int64_t now = 100;
};

// The memdevs list_poison asks: those with trigger_poison_list, each in
// turn; a write that fails is reported, the others still listed.
TEST(ListPoisonMemdevs, EveryMemdevThatCanList) {
    fake::FakeHostOs os;
    const std::string bus = "/sys/bus/cxl/devices";
    os.add_file(bus + "/mem1/trigger_poison_list", "");
    os.add_file(bus + "/mem0/trigger_poison_list", "");
    os.add_dir(bus + "/mem2");    // cannot list its poison
    os.add_dir(bus + "/region0"); // not a memdev
    os.add_dir(bus + "/memory");  // nor this
    os.add_dir(bus + "/mem01");   // nor a name the kernel never makes
    os.add_file(bus + "/mem3/trigger_poison_list", "");
    os.fail_calls(fake::op_write, EBUSY, bus + "/mem3");
    FakeTrace trace(os, 64);
    CxlPoisonTracker tracker;
    auto r = list_poison(
        os, trace, tracker, [](const PoisonBatch&) { return false; }, bus);
    EXPECT_TRUE(r.listing.bus_read);
    EXPECT_EQ(r.listing.all, (std::vector<std::string>{"mem0", "mem1", "mem2", "mem3"}));
    EXPECT_EQ(r.listing.listed, (std::vector<std::string>{"mem0", "mem1"}));
    ASSERT_EQ(r.listing.failed.size(), 1u);
    EXPECT_NE(r.listing.failed[0].find("mem3/trigger_poison_list"), std::string::npos)
        << r.listing.failed[0];
    EXPECT_EQ(r.incomplete, (std::vector<std::string>{"mem3"}));
    EXPECT_EQ(os.writes(), (std::vector<std::pair<std::string, std::string>>{
                               {bus + "/mem0/trigger_poison_list", "1\n"},
                               {bus + "/mem1/trigger_poison_list", "1\n"}}));
}

TEST(ListPoisonMemdevs, AFailedLookAtTheBusSaysNothingOfTheMemdevs) {
    fake::FakeHostOs os;
    const std::string bus = "/sys/bus/cxl/devices";
    os.add_file(bus + "/mem0/trigger_poison_list", "");
    os.fail_calls(fake::op_open, EMFILE);
    FakeTrace trace(os, 64);
    CxlPoisonTracker tracker;
    auto none = [](const PoisonBatch&) { return false; };
    auto r = list_poison(os, trace, tracker, none, bus);
    EXPECT_FALSE(r.listing.bus_read); // the daemon keeps every memdev's records
    EXPECT_TRUE(r.listing.all.empty());
    EXPECT_EQ(r.listing.failed.size(), 1u);
    EXPECT_TRUE(os.writes().empty());
    EXPECT_FALSE(tracker.complete());
    // No CXL bus at all: read, and no memdev.
    fake::FakeHostOs bare;
    FakeTrace bare_trace(bare, 64);
    CxlPoisonTracker bare_tracker;
    auto n = list_poison(bare, bare_trace, bare_tracker, none, bus);
    EXPECT_TRUE(n.listing.bus_read);
    EXPECT_TRUE(n.listing.all.empty() && n.listing.failed.empty());
}

// Issue 19, item 1: a listing that lost events must not erase known poison.
// (Before the fix every memdev was triggered at once and the list taken as
// whole whatever was lost: tag A went back to ok.)
TEST_F(ListPoisonTest, EventsLostDuringAListingKeepTheKnownPoison) {
    FakeTrace trace(os, 16);
    trace.lists["mem0"] = {rec(kBase, 64, 0)};
    auto r = list(trace);
    EXPECT_EQ(r.listing.listed, (std::vector<std::string>{"mem0", "mem1"}));
    EXPECT_TRUE(r.incomplete.empty());
    EXPECT_EQ(t.health_of(a).bad, (std::vector<BadRange>{{0, 64, 100}}));
    EXPECT_TRUE(t.complete());
    // Now mem0 lists 40 records, more than the ring holds: the first ones
    // (tag A's, at DPA 0) are overwritten before anyone reads them.
    std::vector<PoisonRecord> many{rec(kBase, 64, 0)};
    for (std::uint64_t i = 1; i < 40; ++i)
        many.push_back(rec(kMax, 64, i * 64)); // records outside every region
    trace.lists["mem0"] = many;
    now = 200;
    r = list(trace);
    EXPECT_EQ(r.incomplete, std::vector<std::string>{"mem0"});
    EXPECT_EQ(r.listing.listed, std::vector<std::string>{"mem1"});
    auto h = t.health_of(a);
    EXPECT_EQ(h.bad, (std::vector<BadRange>{{0, 64, 100}})) << "known poison erased";
    EXPECT_STREQ(h.status(), "degraded");
    ASSERT_EQ(h.incomplete.size(), 1u);
    EXPECT_NE(h.incomplete[0].find("mem0"), std::string::npos) << h.incomplete[0];
    // Tag B, in the same CXL region, is not ok either: what was lost may be its.
    EXPECT_STREQ(t.health_of(b).status(), "incomplete");
    // A tag outside every CXL region is not concerned.
    TagRecord far;
    auto dev = std::make_shared<ProbedDevice>();
    dev->dev.ranges.push_back({kBase + 8 * GiB, kBase + 9 * GiB - 1});
    far.devices.push_back(dev);
    EXPECT_TRUE(t.health_of(far).ok());
    // The list fits again (the device cleared some): read whole, replaced.
    trace.lists["mem0"] = {rec(kBase + 4096, 64, 0x1000)};
    now = 300;
    r = list(trace);
    EXPECT_TRUE(r.incomplete.empty());
    EXPECT_TRUE(r.changed);
    EXPECT_EQ(t.health_of(a).bad, (std::vector<BadRange>{{4096, 64, 300}}));
    EXPECT_TRUE(t.health_of(a).incomplete.empty());
    EXPECT_TRUE(t.health_of(b).ok());
}

TEST_F(ListPoisonTest, OneMemdevAtATimeEachReadDry) {
    // Each memdev's list fits the ring, both together do not: listed one
    // at a time, neither loses anything.
    FakeTrace trace(os, 12);
    for (std::uint64_t i = 0; i < 10; ++i) {
        trace.lists["mem0"].push_back(rec(kBase + i * 4096, 64, i * 64));
        trace.lists["mem1"].push_back(
            rec(kBase + GiB + i * 4096, 64, i * 64, PoisonTraceType::list, "mem1"));
    }
    auto r = list(trace);
    EXPECT_TRUE(r.incomplete.empty());
    EXPECT_EQ(t.record_count(), 20u);
    EXPECT_EQ(t.health_of(a).bad.size(), 10u);
    EXPECT_EQ(t.health_of(b).bad.size(), 10u);
    EXPECT_TRUE(t.health_of(a).incomplete.empty());
    // Triggered in order, one write each.
    EXPECT_EQ(os.writes().size(), 2u);
}

TEST_F(ListPoisonTest, LostOutsideAListingUntilEveryListIsWhole) {
    FakeTrace trace(os, 16);
    trace.lists["mem0"] = {rec(kBase, 64, 0)};
    list(trace);
    // The loop saw "[LOST n EVENTS]": nobody knows of which memdev.
    EXPECT_TRUE(t.set_incomplete("", "lost"));
    EXPECT_STREQ(t.health_of(b).status(), "incomplete");
    // A failed trigger leaves mem1 incomplete, and so the whole.
    os.fail_calls(fake::op_write, EBUSY, std::string(kBus) + "/mem1");
    auto r = list(trace);
    EXPECT_EQ(r.incomplete, std::vector<std::string>{"mem1"});
    EXPECT_EQ(t.health_of(b).incomplete.size(), 2u);
    os.heal();
    r = list(trace);
    EXPECT_TRUE(r.incomplete.empty());
    EXPECT_TRUE(t.complete());
    EXPECT_TRUE(t.health_of(b).ok());
    // Where the CXL regions are cannot be read: every tag is concerned.
    os.fail_calls(fake::op_read, EIO, std::string(kBus) + "/region0");
    t.set_incomplete("", "lost");
    trace.lists["mem1"] = std::vector<PoisonRecord>(40, rec(kMax, 64, 0));
    r = list(trace);
    TagRecord far;
    auto dev = std::make_shared<ProbedDevice>();
    dev->dev.ranges.push_back({kBase + 8 * GiB, kBase + 9 * GiB - 1});
    far.devices.push_back(dev);
    EXPECT_STREQ(t.health_of(far).status(), "incomplete");
}

TEST(TraceInstanceName, OnePerMountPoint) {
    EXPECT_EQ(trace_instance_name("/run/tagmem"), "tagmem");
    EXPECT_EQ(trace_instance_name("/run/tagmem/"), "tagmem");
    EXPECT_EQ(trace_instance_name("/mnt/tags"), "tagmem-mnt-tags");
    EXPECT_EQ(trace_instance_name("/tmp/a-b/c d"), "tagmem-tmp-a_x2db-c_x20d");
    EXPECT_NE(trace_instance_name("/a/b"), trace_instance_name("/a-b"));
    auto long_name = trace_instance_name("/" + std::string(300, 'x'));
    EXPECT_EQ(long_name.size(), std::string("tagmem-").size() + 16);
    EXPECT_NE(long_name, trace_instance_name("/" + std::string(301, 'x')));
}

} // namespace
} // namespace tagmem
