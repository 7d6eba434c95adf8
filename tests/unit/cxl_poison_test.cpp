// SPDX-License-Identifier: Apache-2.0
// CXL poison: the parser of cxl:cxl_poison trace lines (the kernel's
// TP_printk of Linux 6.4 to 6.14 and, with hpa_alias0, of 6.15 on), every
// malformed field, huge values and overflowing ranges; the line splitter's
// bound; the tracker's listing, clearing, bounds and the translation of a
// record's host physical range to a tag's offsets at its device's range
// boundaries (a DCD device of two extents).
#include "cxl_poison.hpp"
#include "cxl_poison_format.hpp"
#include "fake_host_os.hpp"
#include "tag_record.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <fstream>
#include <limits>
#include <sstream>

namespace tagmem {
namespace {

constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
constexpr const char* kHeader = "           <...>-1234    [001] .....   563.421007: cxl_poison: ";
constexpr const char* kUuid = "5f3b6a2c-1d7e-4c9a-8e0f-0123456789ab";

// A record as the kernel prints it; each field can be replaced.
struct Line {
    std::string memdev = "mem0", host = "0000:0d:00.0", serial = "0", trace_type = "List",
                region = "region0", region_uuid = kUuid, hpa = "0x1000000040", hpa_alias0 = "",
                dpa = "0x40", dpa_length = "0x40", source = "Injected", flags = "",
                overflow_time = "0", tail = "";
    std::string str() const {
        std::string alias = hpa_alias0.empty() ? "" : " hpa_alias0=" + hpa_alias0;
        return fmt::format("{}memdev={} host={} serial={} trace_type={} region={} "
                           "region_uuid={} hpa={}{} dpa={} dpa_length={} source={} flags={} "
                           "overflow_time={}{}",
                           kHeader, memdev, host, serial, trace_type, region, region_uuid, hpa,
                           alias, dpa, dpa_length, source, flags, overflow_time, tail);
    }
};

TEST(ParseCxlPoison, KernelLine) {
    auto r = parse_cxl_poison_line(Line{}.str());
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->memdev, "mem0");
    EXPECT_EQ(r->region, "region0");
    EXPECT_EQ(r->type, PoisonTraceType::list);
    EXPECT_EQ(r->dpa, 0x40u);
    EXPECT_EQ(r->length, 0x40u);
    EXPECT_EQ(r->hpa, (std::vector<ByteRange>{{0x1000000040, 0x40}}));
}

TEST(ParseCxlPoison, VariantsTheKernelPrints) {
    Line l;
    l.trace_type = "Inject";
    l.flags = "More|Overflow|Scanning";
    l.serial = "-6148914691236517206"; // %lld of a u64 above 2^63
    l.overflow_time = "1733072702000000000";
    l.source = "Vendor";
    l.host = "cxl_mem.0"; // cxl_test's platform device
    auto r = parse_cxl_poison_line(l.str());
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->type, PoisonTraceType::inject);
    l.trace_type = "Clear";
    l.flags = "0x8"; // an unnamed flag bit
    ASSERT_TRUE(parse_cxl_poison_line(l.str()));
    EXPECT_EQ(parse_cxl_poison_line(l.str())->type, PoisonTraceType::clear);
    for (const char* source : {"Unknown", "External", "Internal", "Injected", "Reserved"}) {
        l.source = source;
        EXPECT_TRUE(parse_cxl_poison_line(l.str())) << source;
    }
}

TEST(ParseCxlPoison, ATaskNamedLikeTheMarker) {
    // The header's task name is anyone's choice (prctl PR_SET_NAME).
    std::string line = Line{}.str();
    line.replace(line.find("<...>"), 5, ": cxl_poison: ");
    auto r = parse_cxl_poison_line(line);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->dpa, 0x40u);
}

TEST(ParseCxlPoison, NoRegionNoHpa) {
    Line l;
    l.region = "";
    l.region_uuid = "00000000-0000-0000-0000-000000000000";
    l.hpa = "0xffffffffffffffff";
    auto r = parse_cxl_poison_line(l.str());
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_TRUE(r->region.empty());
    EXPECT_TRUE(r->hpa.empty()); // hits no tag
    // A region whose translation failed prints ULLONG_MAX too.
    l.region = "region3";
    r = parse_cxl_poison_line(l.str());
    ASSERT_TRUE(r);
    EXPECT_TRUE(r->hpa.empty());
    // An address and no region is not what the kernel prints.
    l.region = "";
    l.hpa = "0x1000";
    EXPECT_FALSE(parse_cxl_poison_line(l.str()));
}

TEST(ParseCxlPoison, HpaAlias0OfLinux615) {
    Line l;
    l.hpa_alias0 = "0xffffffffffffffff"; // no extended linear cache
    auto r = parse_cxl_poison_line(l.str());
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->hpa.size(), 1u);
    l.hpa_alias0 = "0x800000040";
    r = parse_cxl_poison_line(l.str());
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->hpa, (std::vector<ByteRange>{{0x1000000040, 0x40}, {0x800000040, 0x40}}));
}

TEST(ParseCxlPoison, HugeValuesAndOverflow) {
    Line l;
    l.dpa_length = "0xffffffff"; // the largest u32
    l.hpa = "0xffffff0000000000";
    l.dpa = "0xffffffff00000001"; // ends exactly at 2^64
    auto r = parse_cxl_poison_line(l.str());
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->length, 0xffffffffu);
    // Ending exactly at 2^64 is a range; one byte more is not.
    l.dpa = "0x40";
    l.dpa_length = "0x40";
    l.hpa = "0xffffffffffffffc0";
    ASSERT_TRUE(parse_cxl_poison_line(l.str()));
    EXPECT_EQ(parse_cxl_poison_line(l.str())->hpa, (std::vector<ByteRange>{{kMax - 63, 64}}));
    l.hpa = "0xffffffffffffffc1";
    EXPECT_FALSE(parse_cxl_poison_line(l.str()));
    l.hpa = "0x1000";
    l.dpa = "0xffffffffffffffc1";
    EXPECT_FALSE(parse_cxl_poison_line(l.str()));
    l.dpa = "0x40";
    l.hpa_alias0 = "0xfffffffffffffff0";
    EXPECT_FALSE(parse_cxl_poison_line(l.str()));
    l.hpa_alias0 = "";
    l.hpa = "0x10000000000000000"; // 2^64
    EXPECT_FALSE(parse_cxl_poison_line(l.str()));
    l.hpa = "0x1000";
    l.dpa_length = "0x100000000"; // past u32
    EXPECT_FALSE(parse_cxl_poison_line(l.str()));
    l.dpa_length = "0x0";
    EXPECT_FALSE(parse_cxl_poison_line(l.str()));
}

TEST(ParseCxlPoison, EveryMalformedField) {
    struct Case {
        std::string Line::*field;
        std::vector<std::string> values;
    };
    const std::vector<Case> cases = {
        {&Line::memdev, {"", "mem", "mem01", "memx", "dev0", "mem0 ", "mem-1"}},
        {&Line::host, {"", "a b", "0000:0d:00.0/x", "h\tx"}},
        {&Line::serial, {"", "+1", "01", "-0", "1x", "- 1", "0x10", "99999999999999999999"}},
        {&Line::trace_type, {"", "list", "LIST", "Lists", "Scan"}},
        {&Line::region, {"region", "region01", "Region0", "reg0", "region-1"}},
        {&Line::region_uuid,
         {"", "5f3b6a2c-1d7e-4c9a-8e0f-0123456789a", "5F3B6A2C-1D7E-4C9A-8E0F-0123456789AB",
          "5f3b6a2c1d7e4c9a8e0f0123456789abcdef", "5f3b6a2c-1d7e-4c9a-8e0f-0123456789ag"}},
        {&Line::hpa,
         {"", "0x", "1000", "0X1000", "0x01000", "0x1000g", "0xABC", "-0x1", "0x 1", "0x1000x"}},
        {&Line::dpa, {"", "0x", "40", "0x040", "0xG", "0x-1"}},
        {&Line::dpa_length, {"", "0x", "64", "0x040", "0xffffffffff"}},
        {&Line::source, {"", "injected", "Inject", "Other"}},
        {&Line::flags, {"more", "More|", "|More", "More||Scanning", "Bogus", "0xg"}},
        {&Line::overflow_time, {"", "-1", "01", "0x0", "18446744073709551616"}},
        {&Line::tail, {" ", " extra=1", "x", "\n"}},
    };
    ASSERT_TRUE(parse_cxl_poison_line(Line{}.str()));
    for (const auto& c : cases)
        for (const auto& v : c.values) {
            Line l;
            l.*c.field = v;
            auto r = parse_cxl_poison_line(l.str());
            EXPECT_FALSE(r) << "accepted: " << l.str();
            if (!r) {
                EXPECT_EQ(r.error().code, EINVAL) << r.error().message;
            }
        }
}

TEST(ParseCxlPoison, FieldsOutOfOrderOrMissing) {
    const std::string good = Line{}.str();
    // Swap dpa and hpa; drop a field; a field twice; two blanks.
    std::string swapped = good;
    swapped.replace(swapped.find("hpa=0x1000000040 dpa=0x40"), 25, "dpa=0x40 hpa=0x1000000040");
    EXPECT_FALSE(parse_cxl_poison_line(swapped));
    std::string missing = good;
    missing.erase(missing.find(" source=Injected"), 16);
    EXPECT_FALSE(parse_cxl_poison_line(missing));
    std::string twice = good;
    twice.insert(twice.find(" dpa="), " hpa=0x1000000040");
    EXPECT_FALSE(parse_cxl_poison_line(twice));
    std::string blanks = good;
    blanks.insert(blanks.find(" dpa="), " ");
    EXPECT_FALSE(parse_cxl_poison_line(blanks));
    // Truncated anywhere: never a record.
    for (std::size_t n = 0; n < good.size(); ++n)
        EXPECT_FALSE(parse_cxl_poison_line(good.substr(0, n))) << n;
}

TEST(ParseCxlPoison, OtherLines) {
    // trace_pipe's own line when the ring buffer overwrote records.
    auto lost = parse_cxl_poison_line("CPU:1 [LOST 37 EVENTS]");
    ASSERT_FALSE(lost);
    EXPECT_EQ(lost.error().code, EOVERFLOW);
    for (const char* bad : {"", "garbage", "CPU:x [LOST 37 EVENTS]", "CPU:1 [LOST EVENTS]",
                            "bash-1 [000] 1.0: cxl_general_media: memdev=mem0",
                            "cxl_poison: memdev=mem0", ": cxl_poison: "}) {
        auto r = parse_cxl_poison_line(bad);
        ASSERT_FALSE(r) << bad;
        EXPECT_EQ(r.error().code, EINVAL) << bad;
    }
}

TEST(TraceLineSplitter, LinesAcrossReadsAndTheBound) {
    TraceLineSplitter s;
    std::vector<std::optional<std::string>> lines;
    s.feed("ab", lines);
    EXPECT_TRUE(lines.empty());
    s.feed("c\nd\n\ne", lines);
    ASSERT_EQ(lines.size(), 3u);
    EXPECT_EQ(lines[0], "abc");
    EXPECT_EQ(lines[1], "d");
    EXPECT_EQ(lines[2], "");
    lines.clear();
    // A flood without a newline is dropped as it comes, then reported once.
    const std::string big(TraceLineSplitter::kMaxLine, 'x');
    for (int i = 0; i < 100; ++i)
        s.feed(big, lines);
    EXPECT_TRUE(lines.empty());
    s.feed("tail\nnext\n", lines);
    ASSERT_EQ(lines.size(), 2u);
    EXPECT_FALSE(lines[0].has_value());
    EXPECT_EQ(lines[1], "next");
    // Exactly kMaxLine is a line.
    lines.clear();
    s.feed(big + "\n", lines);
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_EQ(lines[0], big);
}

// A DCD device of two extents: [base, base + 1 GiB) then
// [base + 2 GiB, base + 2.5 GiB), in data order.
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

TEST(TriggerPoisonLists, EveryMemdevThatCanList) {
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
    auto t = trigger_poison_lists(os, bus);
    EXPECT_TRUE(t.bus_read);
    EXPECT_EQ(t.all, (std::vector<std::string>{"mem0", "mem1", "mem2", "mem3"}));
    EXPECT_EQ(t.listed, (std::vector<std::string>{"mem0", "mem1"}));
    ASSERT_EQ(t.failed.size(), 1u);
    EXPECT_NE(t.failed[0].find("mem3/trigger_poison_list"), std::string::npos) << t.failed[0];
    EXPECT_EQ(os.writes(), (std::vector<std::pair<std::string, std::string>>{
                               {bus + "/mem0/trigger_poison_list", "1\n"},
                               {bus + "/mem1/trigger_poison_list", "1\n"}}));
}

TEST(TriggerPoisonLists, AFailedListingSaysNothingOfTheMemdevs) {
    fake::FakeHostOs os;
    const std::string bus = "/sys/bus/cxl/devices";
    os.add_file(bus + "/mem0/trigger_poison_list", "");
    os.fail_calls(fake::op_open, EMFILE);
    auto t = trigger_poison_lists(os, bus);
    EXPECT_FALSE(t.bus_read); // the daemon keeps every memdev's records
    EXPECT_TRUE(t.all.empty());
    EXPECT_EQ(t.failed.size(), 1u);
    EXPECT_TRUE(os.writes().empty());
    // No CXL bus at all: read, and no memdev.
    fake::FakeHostOs none;
    auto n = trigger_poison_lists(none, bus);
    EXPECT_TRUE(n.bus_read);
    EXPECT_TRUE(n.all.empty() && n.failed.empty());
}

// A trace instance as the kernel runs it for list_poison: a write of a
// memdev's trigger_poison_list emits that memdev's list inside the write,
// into a ring buffer of `ring` records; a list longer than that overwrites
// its oldest records and trace_pipe then says "[LOST n EVENTS]".
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

std::string data_file(const std::string& name) {
    std::ifstream in(std::string(TAGMEM_TEST_DATA) + "/" + name);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Issue 19, item 3: the event is read by its fields as the format file
// (kernel ABI) declares them, through libtraceevent.
TEST(PoisonFormat, TheKernelsFormats) {
    auto f = parse_poison_format(data_file("cxl_poison_format_6.12"));
    ASSERT_TRUE(f) << f.error().message;
    EXPECT_EQ(f->id, 1788);
    EXPECT_FALSE(f->hpa_alias0);
    EXPECT_EQ(f->keys.front(), "memdev");
    EXPECT_EQ(f->keys.back(), "overflow_time");
    auto g = parse_poison_format(data_file("cxl_poison_format_6.15"));
    ASSERT_TRUE(g) << g.error().message;
    EXPECT_TRUE(g->hpa_alias0);
}

TEST(PoisonFormat, AnyOtherFormatIsRefusedWithTheReason) {
    const std::string good = data_file("cxl_poison_format_6.12");
    ASSERT_FALSE(good.empty());
    auto refused = [](const std::string& text, const std::string& why) {
        auto f = parse_poison_format(text);
        EXPECT_FALSE(f) << "accepted a format with " << why;
        if (!f) {
            EXPECT_NE(f.error().message.find(why), std::string::npos) << f.error().message;
        }
    };
    auto with = [&](std::string_view from, std::string_view to) {
        std::string t = good;
        auto at = t.find(from);
        EXPECT_NE(at, std::string::npos) << from;
        t.replace(at, from.size(), to);
        return t;
    };
    refused(with("u64 hpa;", "u64 hpx;"), "no field hpa");
    refused(with("u32 dpa_length;\toffset:56;\tsize:4;", "u64 dpa_length;\toffset:56;\tsize:8;"),
            "field dpa_length");
    refused(with("__data_loc char[] memdev;", "char memdev[4];"), "field memdev");
    refused(with("name: cxl_poison", "name: cxl_poison2"), "no event named cxl_poison");
    refused(with("hpa=0x%llx dpa=", "hpa=0x%llx dpa_base="), "print fmt keys");
    refused(with("memdev=%s host=%s", "host=%s memdev=%s"), "print fmt keys");
    refused("garbage", "cxl_poison");
    // A format with the field but a print fmt without it (or the reverse).
    refused(with("hpa=0x%llx dpa=", "hpa=0x%llx hpa_alias0=0x%llx dpa="), "print fmt keys");
}

TEST(PoisonFormat, LinesAreHeldToTheFormat) {
    Line l;
    EXPECT_TRUE(parse_cxl_poison_line(l.str(), false));
    EXPECT_FALSE(parse_cxl_poison_line(l.str(), true)) << "6.15's format: hpa_alias0 required";
    l.hpa_alias0 = "0xffffffffffffffff";
    EXPECT_TRUE(parse_cxl_poison_line(l.str(), true));
    EXPECT_FALSE(parse_cxl_poison_line(l.str(), false)) << "6.12's format has no hpa_alias0";
    EXPECT_TRUE(parse_cxl_poison_line(l.str())); // no format file: either
}

} // namespace
} // namespace tagmem
