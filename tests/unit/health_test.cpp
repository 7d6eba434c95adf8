// SPDX-License-Identifier: Apache-2.0
// Memory errors: the badblocks parser, the range-to-offset arithmetic at
// region, namespace (info block) and extent boundaries, and the tracker's
// first-seen times and failure handling.
#include "fake_host_os.hpp"
#include "health.hpp"
#include "json_output.hpp"
#include "tag_record.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <limits>

namespace tagmem {
namespace {

constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
constexpr std::uint64_t S = kBadblockSectorSize;

TEST(ParseBadblocks, KernelText) {
    auto r = parse_badblocks("0 1\n8 16\n18446744073709551615 4294967295\n");
    ASSERT_TRUE(r) << r.error().message;
    ASSERT_EQ(r->ranges.size(), 3u);
    EXPECT_FALSE(r->truncated);
    EXPECT_EQ(r->ranges[0], (SectorRange{0, 1}));
    EXPECT_EQ(r->ranges[1], (SectorRange{8, 16}));
    EXPECT_EQ(r->ranges[2], (SectorRange{kMax, 4294967295u}));
    auto empty = parse_badblocks("");
    ASSERT_TRUE(empty);
    EXPECT_TRUE(empty->ranges.empty());
    EXPECT_FALSE(empty->truncated);
}

// What the kernel's badblocks show hands out for a list longer than a
// page: 4095 bytes (PAGE_SIZE - 1), the last line cut where the page ended.
std::string page_of_ranges(std::size_t n, std::size_t page = kBadblocksPage) {
    std::string full;
    for (std::size_t i = 0; i < n; ++i)
        full += fmt::format("{} 8\n", 1000000 + i * 16);
    return full.size() > page - 1 ? full.substr(0, page - 1) : full;
}

TEST(ParseBadblocks, ALongListCutAtThePageIsTruncatedNotRejected) {
    // 500 ranges of 10 bytes each: 5000 bytes, cut at 4095.
    const std::string text = page_of_ranges(500);
    ASSERT_EQ(text.size(), kBadblocksPage - 1);
    ASSERT_NE(text.back(), '\n'); // cut inside a line
    auto r = parse_badblocks(text);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_TRUE(r->truncated);
    EXPECT_EQ(r->ranges.size(), 4095u / 10);
    EXPECT_EQ(r->ranges.front(), (SectorRange{1000000, 8}));
    EXPECT_EQ(r->ranges.back(), (SectorRange{1000000 + (4095 / 10 - 1) * 16, 8}));
    auto e = parse_badblocks(page_of_ranges(409)); // 4090 bytes, whole lines
    ASSERT_TRUE(e);
    EXPECT_FALSE(e->truncated) << "a list shorter than the page is whole";
    auto full = parse_badblocks(page_of_ranges(409) + "1 10\n"); // 4095 bytes: the page
    ASSERT_TRUE(full);
    EXPECT_TRUE(full->truncated);
    // The complete lines are still held to the kernel's form.
    std::string bad = text;
    bad.replace(0, 7, "0x10000");
    EXPECT_FALSE(parse_badblocks(bad));
    // Another page size (sysconf): the same rule.
    auto big = parse_badblocks(text, 65536);
    EXPECT_FALSE(big) << "a cut line in a list shorter than the page is malformed";
}

TEST(ParseBadblocks, MalformedLinesFailTheWhole) {
    for (const char* bad : {
             "8 16",                     // truncated: no newline
             "8 16\n\n",                 // blank line
             "8\n",                      // one number
             "8 16 1\n",                 // three
             "8  16\n",                  // two blanks
             " 8 16\n",                  // leading blank
             "8 16 \n",                  // trailing blank
             "8\t16\n",                  // tab
             "-8 16\n",                  // sign
             "+8 16\n",                  // sign
             "08 16\n",                  // leading zero
             "0x8 16\n",                 // hex
             "8 0\n",                    // empty range
             "8 16\r\n",                 // CR
             "18446744073709551616 1\n", // 2^64
             "8 16\n9 x\n",              // a bad second line
         }) {
        auto r = parse_badblocks(bad);
        EXPECT_FALSE(r) << "accepted: '" << bad << "'";
        if (!r) {
            EXPECT_EQ(r.error().code, EINVAL);
        }
    }
    auto r = parse_badblocks("8 16\n9 x\n");
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("line 2"), std::string::npos) << r.error().message;
}

TEST(RegionRange, FirstAndLastSectorOfTheRegion) {
    const std::uint64_t base = 0x100000000, size = 64 * S;
    EXPECT_EQ(region_range_to_physical(base, size, {0, 1}), (ByteRange{base, S}));
    EXPECT_EQ(region_range_to_physical(base, size, {63, 1}), (ByteRange{base + 63 * S, S}));
    // Straddling the end: clipped to the region.
    EXPECT_EQ(region_range_to_physical(base, size, {60, 10}), (ByteRange{base + 60 * S, 4 * S}));
    // Wholly outside.
    EXPECT_EQ(region_range_to_physical(base, size, {64, 1}), std::nullopt);
    EXPECT_EQ(region_range_to_physical(base, 0, {0, 1}), std::nullopt);
}

TEST(RegionRange, OverflowSafe) {
    // sector * 512 past 2^64: outside any region, not wrapped to a low address.
    EXPECT_EQ(region_range_to_physical(0, kMax, {kMax / S + 1, 1}), std::nullopt);
    EXPECT_EQ(region_range_to_physical(0, kMax, {kMax, kMax}), std::nullopt);
    // A count whose byte length overflows is clipped to the region.
    EXPECT_EQ(region_range_to_physical(0x1000, 16 * S, {2, kMax}),
              (ByteRange{0x1000 + 2 * S, 14 * S}));
    // A region at the very top of the address space.
    const std::uint64_t top = kMax - 16 * S + 1;
    EXPECT_EQ(region_range_to_physical(top, 16 * S, {15, 1}), (ByteRange{top + 15 * S, S}));
    // One that claims to run past it is not believed.
    EXPECT_EQ(region_range_to_physical(top + 1, 16 * S, {0, 1}), std::nullopt);
}

SmallVec<PhysRange> ranges(std::initializer_list<PhysRange> list) {
    SmallVec<PhysRange> v;
    for (const auto& r : list)
        v.push_back(r);
    return v;
}

// An NVDIMM devdax: the namespace starts 16 MiB into the region, the device's
// data 2 MiB (the info block) into the namespace.
TEST(PhysicalToData, NamespaceAndInfoBlockBoundaries) {
    const std::uint64_t region = 0x240000000, ns = region + (16 << 20), data = ns + (2 << 20);
    const std::uint64_t size = 1 << 30;
    auto dev = ranges({{data, data + size - 1}});
    // The namespace's info block: before the data, hits nothing.
    EXPECT_TRUE(physical_to_data(dev, {ns, 2 << 20}).empty());
    // The last byte before the data and the first byte of it.
    auto first = physical_to_data(dev, {data - 1, 2});
    ASSERT_EQ(first.size(), 1u);
    EXPECT_EQ(first[0], (ByteRange{0, 1}));
    // The last byte of the data, and a range running past it.
    auto last = physical_to_data(dev, {data + size - S, 4 * S});
    ASSERT_EQ(last.size(), 1u);
    EXPECT_EQ(last[0], (ByteRange{size - S, S}));
    // Past the end: the next namespace's.
    EXPECT_TRUE(physical_to_data(dev, {data + size, S}).empty());
    // From a region's badblocks line to the offset: sector 16 MiB + 2 MiB + 3
    // pages, in 512-byte sectors.
    const std::uint64_t sector = ((16 << 20) + (2 << 20) + 3 * 4096) / S;
    auto phys = region_range_to_physical(region, 4ull << 30, {sector, 8});
    ASSERT_TRUE(phys);
    auto hit = physical_to_data(dev, *phys);
    ASSERT_EQ(hit.size(), 1u);
    EXPECT_EQ(hit[0], (ByteRange{3 * 4096, 8 * S}));
}

// A device of several ranges (DCD extents, or a grown dynamic device): its
// data is their concatenation in order, whatever their physical order.
TEST(PhysicalToData, ExtentBoundaries) {
    const std::uint64_t G = 1ull << 30;
    // data [0,1G) at 10G, [1G,2G) at 4G, [2G,2.5G) at 11G: the first and
    // third are physically adjacent but not in the data.
    auto dev = ranges({{10 * G, 11 * G - 1}, {4 * G, 5 * G - 1}, {11 * G, 11 * G + G / 2 - 1}});
    // Last byte of the first extent, first of the second.
    EXPECT_EQ(physical_to_data(dev, {11 * G - 1, 1}), (std::vector<ByteRange>{{G - 1, 1}}));
    EXPECT_EQ(physical_to_data(dev, {4 * G, 1}), (std::vector<ByteRange>{{G, 1}}));
    // Straddling the physical join of extents 1 and 3: two pieces of data.
    EXPECT_EQ(physical_to_data(dev, {11 * G - S, 2 * S}),
              (std::vector<ByteRange>{{G - S, S}, {2 * G, S}}));
    // Last byte of the last extent.
    EXPECT_EQ(physical_to_data(dev, {11 * G + G / 2 - 1, 100}),
              (std::vector<ByteRange>{{2 * G + G / 2 - 1, 1}}));
    // Between extents: nothing.
    EXPECT_TRUE(physical_to_data(dev, {5 * G, G}).empty());
    // Covering all: the whole data, merged into one.
    EXPECT_EQ(physical_to_data(dev, {0, kMax}), (std::vector<ByteRange>{{0, 2 * G + G / 2}}));
}

TEST(PhysicalToData, ContiguousInDataMerged) {
    // Two ranges that follow each other both physically and in the data.
    auto dev = ranges({{0x1000, 0x1fff}, {0x2000, 0x2fff}});
    EXPECT_EQ(physical_to_data(dev, {0x1800, 0x1000}), (std::vector<ByteRange>{{0x800, 0x1000}}));
    // The top of the address space.
    auto top = ranges({{kMax - 0xfff, kMax}});
    EXPECT_EQ(physical_to_data(top, {kMax, 1}), (std::vector<ByteRange>{{0xfff, 1}}));
    EXPECT_TRUE(physical_to_data(top, {0, 0}).empty());
}

TEST(Iso8601, Utc) {
    EXPECT_EQ(iso8601_utc(0), "1970-01-01T00:00:00Z");
    EXPECT_EQ(iso8601_utc(1796151902), "2026-12-01T19:05:02Z");
}

class TrackerTest : public ::testing::Test {
  protected:
    static constexpr std::uint64_t kBase = 0x240000000, kSize = 4ull << 30;
    static constexpr const char* kRegion = "/sys/bus/nd/devices/region0";
    void SetUp() override {
        os.add_dir("/sys/bus/nd/devices");
        os.add_dir(kRegion);
        os.add_file(std::string(kRegion) + "/resource", "0x240000000\n");
        os.add_file(std::string(kRegion) + "/size", "4294967296\n");
        os.add_file(std::string(kRegion) + "/badblocks", "");
        os.add_dir("/sys/bus/nd/devices/ndbus0"); // not a region
        record.tag = *Uuid::parse("11111111-2222-3333-4444-555555555555");
        auto dev = std::make_shared<ProbedDevice>();
        // 2 MiB into the region (namespace at 0, info block 2 MiB).
        dev->dev.ranges.push_back({kBase + (2 << 20), kBase + (2 << 20) + (1ull << 30) - 1});
        record.devices.push_back(dev);
        other.tag = *Uuid::parse("11111111-2222-3333-4444-666666666666");
        auto dev2 = std::make_shared<ProbedDevice>();
        dev2->dev.ranges.push_back({kBase + (2ull << 30), kBase + (3ull << 30) - 1});
        other.devices.push_back(dev2);
    }
    void set_badblocks(const std::string& text) {
        os.add_file(std::string(kRegion) + "/badblocks", text);
    }
    fake::FakeHostOs os;
    TagRecord record, other;
};

TEST_F(TrackerTest, OkUntilABadRangeAppears) {
    HealthTracker t(os);
    EXPECT_FALSE(t.rescan(100));
    EXPECT_EQ(t.regions(), std::vector<std::string>{"region0"});
    EXPECT_FALSE(t.health_of(record).degraded());
    // 4 KiB at 1 MiB into the tag's data.
    set_badblocks(fmt::format("{} 8\n", ((2 << 20) + (1 << 20)) / S));
    EXPECT_TRUE(t.rescan(200));
    auto h = t.health_of(record);
    ASSERT_TRUE(h.degraded());
    EXPECT_EQ(h.bad, (std::vector<BadRange>{{1 << 20, 4096, 200}}));
    EXPECT_FALSE(t.health_of(other).degraded());
    // Unchanged: first seen stays.
    EXPECT_FALSE(t.rescan(300));
    EXPECT_EQ(t.health_of(record).bad[0].first_seen, 200);
    // The kernel merges a neighbour into it: still first seen at 200.
    set_badblocks(fmt::format("{} 16\n", ((2 << 20) + (1 << 20)) / S));
    EXPECT_TRUE(t.rescan(400));
    EXPECT_EQ(t.health_of(record).bad, (std::vector<BadRange>{{1 << 20, 8192, 200}}));
    // A second, elsewhere: its own time.
    set_badblocks(fmt::format("{} 16\n{} 1\n", ((2 << 20) + (1 << 20)) / S, (2ull << 30) / S));
    EXPECT_TRUE(t.rescan(500));
    EXPECT_EQ(t.health_of(other).bad, (std::vector<BadRange>{{0, S, 500}}));
    EXPECT_EQ(t.health_of(record).bad.size(), 1u);
    // Gone from the list: dropped.
    set_badblocks("");
    EXPECT_TRUE(t.rescan(600));
    EXPECT_FALSE(t.health_of(record).degraded());
    EXPECT_FALSE(t.health_of(other).degraded());
}

TEST_F(TrackerTest, AFailedOrMalformedReadKeepsTheLastKnown) {
    HealthTracker t(os);
    set_badblocks(fmt::format("{} 1\n", (2 << 20) / S));
    EXPECT_TRUE(t.rescan(100));
    ASSERT_TRUE(t.health_of(record).degraded());
    os.fail(std::string(kRegion) + "/badblocks", EIO);
    EXPECT_FALSE(t.rescan(200));
    EXPECT_TRUE(t.health_of(record).degraded());
    EXPECT_EQ(t.failures().size(), 1u);
    os.fail_calls(fake::op_list, EMFILE);
    EXPECT_FALSE(t.rescan(250));
    EXPECT_TRUE(t.health_of(record).degraded());
    os.heal();
    set_badblocks("garbage\n");
    EXPECT_FALSE(t.rescan(300));
    EXPECT_TRUE(t.health_of(record).degraded());
    ASSERT_EQ(t.failures().count("region0"), 1u);
    EXPECT_NE(t.failures().at("region0").find("line 1"), std::string::npos);
    // Through the notification path too.
    EXPECT_FALSE(t.update_region("region0", make_error(EIO, "read: EIO"), 350));
    EXPECT_TRUE(t.health_of(record).degraded());
    EXPECT_FALSE(t.update_region("region0", std::string("1 x\n"), 360));
    EXPECT_TRUE(t.health_of(record).degraded());
    // Readable again: the range is still there, first seen at 100.
    EXPECT_FALSE(t.update_region("region0", fmt::format("{} 1\n", (2 << 20) / S), 400));
    EXPECT_EQ(t.health_of(record).bad[0].first_seen, 100);
    EXPECT_TRUE(t.failures().empty());
    // The region gone: its ranges go with it.
    EXPECT_TRUE(t.update_region("region0", make_error(ENODEV, "gone"), 500));
    EXPECT_FALSE(t.health_of(record).degraded());
    EXPECT_TRUE(t.regions().empty());
}

TEST_F(TrackerTest, AListCutAtThePageIsIncompleteNotOk) {
    HealthTracker t(os);
    // 1000 bad ranges, none of them in the first page inside the tag's data
    // (they lie before it, in the info block): the tag is not ok, as the
    // ranges past the page may be anywhere in the region.
    std::string full;
    for (int i = 0; i < 1000; ++i)
        full += fmt::format("{} 1\n", 100 + i * 2);
    os.add_file(std::string(kRegion) + "/badblocks", full.substr(0, kBadblocksPage - 1));
    t.rescan(100);
    auto h = t.health_of(record);
    EXPECT_TRUE(h.bad.empty());
    EXPECT_FALSE(h.ok());
    EXPECT_STREQ(h.status(), "incomplete");
    ASSERT_EQ(h.incomplete.size(), 1u);
    EXPECT_NE(h.incomplete[0].find("region0/badblocks is longer than the page"), std::string::npos)
        << h.incomplete[0];
    EXPECT_STREQ(t.health_of(other).status(), "incomplete"); // in the same region
    // A tag outside the region is not concerned.
    TagRecord far;
    auto dev = std::make_shared<ProbedDevice>();
    dev->dev.ranges.push_back({kBase + kSize, kBase + kSize + (1 << 30) - 1});
    far.devices.push_back(dev);
    EXPECT_TRUE(t.health_of(far).ok());
    // Through the notification path, a page with a range in the tag: degraded,
    // and still incomplete.
    std::string in_tag = fmt::format("{} 8\n", (2 << 20) / S);
    EXPECT_TRUE(t.update_region("region0",
                                in_tag + full.substr(0, kBadblocksPage - 1 - in_tag.size()), 200));
    h = t.health_of(record);
    EXPECT_STREQ(h.status(), "degraded");
    EXPECT_EQ(h.bad, (std::vector<BadRange>{{0, 4096, 200}}));
    EXPECT_EQ(h.incomplete.size(), 1u);
    // The list shrinks under a page: whole again.
    EXPECT_TRUE(t.update_region("region0", std::string(""), 300));
    EXPECT_TRUE(t.health_of(record).ok());
    // An unreadable list is not ok either, even before anything was known.
    os.fail(std::string(kRegion) + "/badblocks", EIO);
    t.rescan(400);
    EXPECT_STREQ(t.health_of(record).status(), "incomplete");
    os.heal();
    set_badblocks("");
    t.rescan(500);
    EXPECT_TRUE(t.health_of(record).ok());
}

TEST_F(TrackerTest, NotifiedText) {
    HealthTracker t(os);
    t.rescan(100);
    EXPECT_TRUE(t.update_region("region0", fmt::format("{} 8\n", (2 << 20) / S), 150));
    EXPECT_EQ(t.health_of(record).bad, (std::vector<BadRange>{{0, 4096, 150}}));
    // A region the tracker has not read the place of is ignored.
    EXPECT_FALSE(t.update_region("region9", std::string("0 1\n"), 150));
}

TEST_F(TrackerTest, RegionMovedOrRemoved) {
    HealthTracker t(os);
    set_badblocks(fmt::format("{} 1\n", (2 << 20) / S));
    EXPECT_TRUE(t.rescan(100));
    os.remove(kRegion);
    EXPECT_TRUE(t.rescan(200));
    EXPECT_FALSE(t.health_of(record).degraded());
    EXPECT_TRUE(t.regions().empty());
}

TEST(HealthJson, OffsetsOnlyNeverPhysical) {
    TagRecord r;
    r.tag = *Uuid::parse("11111111-2222-3333-4444-555555555555");
    auto j = tag_to_json(r, false);
    EXPECT_EQ(j["health"], nlohmann::json::parse(R"({"status":"ok","bad_ranges":[]})"));
    TagHealth h;
    h.bad.push_back({4096, 512, 0});
    r.health = std::make_shared<const TagHealth>(h);
    j = tag_to_json(r, false);
    EXPECT_EQ(j["health"], nlohmann::json::parse(R"({"status":"degraded","bad_ranges":[
        {"offset":4096,"length":512,"first_seen":"1970-01-01T00:00:00Z"}]})"));
}

TEST(HealthRecord, EqualityCountsHealth) {
    TagRecord a, b;
    EXPECT_EQ(a, b);
    b.health = std::make_shared<const TagHealth>(); // ok, spelled out
    EXPECT_EQ(a, b);
    TagHealth h;
    h.bad.push_back({0, 512, 1});
    b.health = std::make_shared<const TagHealth>(h);
    EXPECT_FALSE(a == b);
}

} // namespace
} // namespace tagmem
