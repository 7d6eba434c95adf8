// SPDX-License-Identifier: Apache-2.0
// Issue 19, item 3: CXL trace records are read from the ring buffer's
// binary pages and decoded by field (core/trace_decoder.hpp), the fields
// checked against the kernels' format files (tests/data: Linux 6.12, 6.15
// and the DCD series' 7.2 kernel, whose real pages are decoded too).
#include "cxl_poison_format.hpp"
#include "trace_decoder.hpp"
#include "trace_page.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <limits>
#include <sstream>

namespace tagmem {
namespace {

using test::PageBuilder;
using test::RecordBuilder;
using T = DcCapacityEvent::DcEventType;

constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();

std::string data_file(const std::string& name) {
    std::ifstream in(std::string(TAGMEM_TEST_DATA) + "/" + name, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::shared_ptr<TraceFormats> formats(const std::string& poison = "cxl_poison_format_7.2_dcd",
                                      bool dc = true) {
    auto f = std::make_shared<TraceFormats>();
    auto s = f->add_poison(data_file(poison));
    EXPECT_TRUE(s) << s.error().message;
    if (dc) {
        auto d = f->add_dc(data_file("cxl_dynamic_capacity_format_7.2_dcd"));
        EXPECT_TRUE(d) << d.error().message;
    }
    return f;
}

RecordBuilder poison(const TraceFormats& f, std::uint64_t hpa = 0x3d0001000,
                     std::uint64_t dpa = 0x1000, std::uint64_t len = 0x40, std::uint64_t type = 0,
                     std::string_view region = "region0") {
    RecordBuilder r(f.poison()->event);
    r.str("memdev", "mem0").str("host", "0000:0d:00.0").str("region", region);
    r.num("trace_type", type).num("hpa", hpa).num("dpa", dpa).num("dpa_length", len);
    if (f.poison()->hpa_alias0)
        r.num("hpa_alias0", kMax);
    return r;
}

const std::vector<std::uint8_t> kTag = {0x5b, 0xe1, 0x3b, 0xce, 0xae, 0x34, 0x4a, 0x77,
                                        0xb6, 0xc3, 0x16, 0xdf, 0x97, 0x5f, 0xcf, 0x1a};

RecordBuilder dc(const TraceFormats& f, std::uint64_t type = 1, std::uint64_t start = 0x1000'0000,
                 std::uint64_t length = 0x1000'0000) {
    RecordBuilder r(f.dc()->event);
    r.str("memdev", "mem0").str("host", "0000:0d:00.0");
    r.num("event_type", type).num("dpa_start", start).num("length", length);
    r.bytes("uuid", kTag).num("sh_extent_seq", 7);
    return r;
}

PoisonBatch decode(const std::shared_ptr<TraceFormats>& f, const std::vector<std::uint8_t>& page,
                   PageLayout layout = {}) {
    TraceDecoder d(f, layout);
    PoisonBatch b;
    d.decode(page, b);
    return b;
}

TEST(TraceFormat, EveryKernelsFormatIsRead) {
    for (const char* name :
         {"cxl_poison_format_6.12", "cxl_poison_format_6.15", "cxl_poison_format_7.2_dcd"}) {
        TraceFormats f;
        auto s = f.add_poison(data_file(name));
        ASSERT_TRUE(s) << name << ": " << s.error().message;
        EXPECT_EQ(f.poison()->hpa_alias0 != nullptr, std::string(name) != "cxl_poison_format_6.12");
        EXPECT_FALSE(f.add_poison(data_file(name))) << "twice";
    }
    TraceFormats f;
    ASSERT_TRUE(f.add_dc(data_file("cxl_dynamic_capacity_format_7.2_dcd")));
    EXPECT_EQ(f.dc()->id, 991);
    EXPECT_EQ(f.dc()->min_size, 114); // sh_extent_seq at 112, 2 bytes
    auto l = parse_header_page(data_file("header_page_7.2_dcd"));
    ASSERT_TRUE(l) << l.error().message;
    EXPECT_EQ(l->long_size, 8);
    EXPECT_EQ(l->data_offset, 16u);
    EXPECT_EQ(l->page_size, 4096u);
}

TEST(TraceFormat, OnlyTheFieldsReadMatterNotThePrintFormat) {
    const std::string good = data_file("cxl_poison_format_6.12");
    auto with = [&](std::string t, std::string_view from, std::string_view to) {
        auto at = t.find(from);
        EXPECT_NE(at, std::string::npos) << from;
        if (at != std::string::npos)
            t.replace(at, from.size(), to);
        return t;
    };
    auto refused = [](const std::string& text, const std::string& why) {
        TraceFormats f;
        auto s = f.add_poison(text);
        EXPECT_FALSE(s) << "accepted a format with " << why;
        if (!s) {
            EXPECT_NE(s.error().message.find(why), std::string::npos) << s.error().message;
        }
    };
    // The print format is trace_pipe's business: any is read.
    TraceFormats f;
    EXPECT_TRUE(f.add_poison(with(good, "hpa=0x%llx dpa=", "dpa=0x%llx hpa=")));
    refused(with(good, "u64 hpa;", "u64 hpx;"), "no field hpa");
    refused(
        with(good, "u32 dpa_length;\toffset:56;\tsize:4;", "u64 dpa_length;\toffset:56;\tsize:8;"),
        "field dpa_length is 'u64' of 8 bytes, not an unsigned 4-byte number");
    refused(with(good, "u64 dpa;\toffset:48;\tsize:8;\tsigned:0;",
                 "s64 dpa;\toffset:48;\tsize:8;\tsigned:1;"),
            "field dpa");
    refused(with(good, "__data_loc char[] memdev;", "char memdev[4];"), "field memdev");
    refused(with(good, "name: cxl_poison", "name: cxl_poison2"), "no event named cxl_poison");
    refused("garbage", "cxl_poison");
    const std::string dcf = data_file("cxl_dynamic_capacity_format_7.2_dcd");
    TraceFormats g;
    auto s = g.add_dc(
        with(dcf, "u8 uuid[16];\toffset:96;\tsize:16;", "u8 uuid[8];\toffset:96;\tsize:8;"));
    ASSERT_FALSE(s);
    EXPECT_NE(s.error().message.find("field uuid"), std::string::npos) << s.error().message;
    EXPECT_FALSE(parse_header_page("garbage"));
    EXPECT_FALSE(
        parse_header_page(with(data_file("header_page_7.2_dcd"), "size:4080", "size:1048576")));
}

TEST(TraceDecoder, RealPagesOfTheDcdKernel) {
    // Read from the DCD guest's per_cpu/cpuN/trace_pipe_raw: two poison
    // injections, the list of both, a clear (cpu0), and the Add capacity
    // of a 256 MiB extent tagged 5be13bce-... (cpu1).
    auto f = formats();
    auto page = [](const char* name) {
        std::string s = data_file(name);
        return std::vector<std::uint8_t>(s.begin(), s.end());
    };
    auto b = decode(f, page("trace_pipe_raw_7.2_dcd_cpu0"));
    EXPECT_TRUE(b.malformed.empty()) << b.malformed.front();
    EXPECT_EQ(b.lost, 0u);
    ASSERT_EQ(b.records.size(), 5u);
    const PoisonTraceType want[] = {PoisonTraceType::inject, PoisonTraceType::inject,
                                    PoisonTraceType::list, PoisonTraceType::list,
                                    PoisonTraceType::clear};
    const std::uint64_t dpa[] = {0x1000, 0x2000, 0x2000, 0x1000, 0x1000};
    for (std::size_t i = 0; i < 5; ++i) {
        const auto& r = b.records[i];
        EXPECT_EQ(r.type, want[i]) << i;
        EXPECT_EQ(r.memdev, "mem0");
        EXPECT_EQ(r.region, "region0");
        EXPECT_EQ(r.dpa, dpa[i]);
        EXPECT_EQ(r.length, 0x40u);
        EXPECT_EQ(r.hpa, (std::vector<ByteRange>{{0x3d0000000 + dpa[i], 0x40}}));
    }
    auto c = decode(f, page("trace_pipe_raw_7.2_dcd_cpu1"));
    EXPECT_TRUE(c.malformed.empty());
    ASSERT_EQ(c.dc_events.size(), 1u);
    const auto& e = c.dc_events[0];
    EXPECT_EQ(e.memdev, "mem0");
    EXPECT_EQ(e.type, T::add);
    EXPECT_EQ(e.dpa_start, 0u);
    EXPECT_EQ(e.length, 0x1000'0000u);
    EXPECT_EQ(e.tag.str(), "5be13bce-ae34-4a77-b6c3-16df975fcf1a");
    // Without the DCD event's format, its record is another event's: skipped.
    auto d =
        decode(formats("cxl_poison_format_7.2_dcd", false), page("trace_pipe_raw_7.2_dcd_cpu1"));
    EXPECT_TRUE(d.empty());
}

TEST(TraceDecoder, GoodRecordsOfBothEventsAmongTimeAndPadding) {
    for (const char* name :
         {"cxl_poison_format_6.12", "cxl_poison_format_6.15", "cxl_poison_format_7.2_dcd"}) {
        auto f = formats(name);
        auto small = poison(*f, kMax, 0x40, 0x40, 1, "").build(); // no region, no hpa
        // Records of more than 112 bytes take the length word (type_len 0).
        auto big = poison(*f, 0x1000000040, 0x80, 0x1000, 2).build();
        big.resize(std::max<std::size_t>(big.size(), 120), 0);
        ASSERT_GT(big.size(), 112u);
        auto page = PageBuilder()
                        .time_extend(1ull << 40)
                        .event(small)
                        .padding(16)
                        .event(big)
                        .event(dc(*f, 0).build())
                        .event(dc(*f, 2, 0, 0x2000).build())
                        .event(dc(*f, 3, 0, 0).build())
                        .build();
        auto b = decode(f, page);
        EXPECT_TRUE(b.malformed.empty()) << name << ": " << b.malformed.front();
        ASSERT_EQ(b.records.size(), 2u) << name;
        EXPECT_EQ(b.records[0].type, PoisonTraceType::inject);
        EXPECT_TRUE(b.records[0].region.empty());
        EXPECT_TRUE(b.records[0].hpa.empty());
        EXPECT_EQ(b.records[1].type, PoisonTraceType::clear);
        EXPECT_EQ(b.records[1].hpa, (std::vector<ByteRange>{{0x1000000040, 0x1000}}));
        ASSERT_EQ(b.dc_events.size(), 3u);
        EXPECT_EQ(b.dc_events[0].type, T::add);
        EXPECT_EQ(b.dc_events[0].shared_seq, 7);
        EXPECT_EQ(b.dc_events[0].tag.str(), "5be13bce-ae34-4a77-b6c3-16df975fcf1a");
        EXPECT_EQ(b.dc_events[1].type, T::forced_release);
        EXPECT_EQ(b.dc_events[1].length, 0x2000u);
        EXPECT_EQ(b.dc_events[2].type, T::region_updated);
    }
}

TEST(TraceDecoder, HpaAlias0IsASecondRange) {
    auto f = formats("cxl_poison_format_6.15");
    auto r = poison(*f, 0x1000, 0, 64).num("hpa_alias0", 0x9000).build();
    auto b = decode(f, PageBuilder().event(r).build());
    ASSERT_EQ(b.records.size(), 1u);
    EXPECT_EQ(b.records[0].hpa, (std::vector<ByteRange>{{0x1000, 64}, {0x9000, 64}}));
}

TEST(TraceDecoder, MissedEventsAreLost) {
    auto f = formats();
    auto b = decode(f, PageBuilder().missed(12).event(poison(*f).build()).build());
    EXPECT_EQ(b.lost, 12u);
    EXPECT_EQ(b.records.size(), 1u);
    b = decode(f, PageBuilder().missed(std::nullopt).build()); // some, count not stored
    EXPECT_EQ(b.lost, 1u);
    EXPECT_FALSE(b.empty());
    // A page that starts with a time stamp still says it.
    b = decode(f, PageBuilder().missed(3).time_extend(5).event(poison(*f).build()).build());
    EXPECT_EQ(b.lost, 3u);
}

TEST(TraceDecoder, EveryMalformedRecord) {
    auto f = formats();
    auto one = [&](std::vector<std::uint8_t> rec, const std::string& why) {
        auto b = decode(f, PageBuilder().event(rec).event(poison(*f).build()).build());
        EXPECT_EQ(b.records.size(), 1u) << why << ": the next record is read";
        ASSERT_EQ(b.malformed.size(), 1u) << why;
        EXPECT_NE(b.malformed[0].find(why), std::string::npos) << b.malformed[0];
        for (const char* addr : {"3d0001000", "16374", "0xffff"})
            EXPECT_EQ(b.malformed[0].find(addr), std::string::npos) << b.malformed[0];
    };
    one(poison(*f, 0x3d0001000, 0x1000, 0).build(), "dpa_length 0");
    one(poison(*f, 0x3d0001000, kMax - 10, 0x40).build(), "dpa + dpa_length passes 2^64");
    one(poison(*f, kMax - 0x20, 0x1000, 0x40).build(), "hpa + dpa_length passes 2^64");
    one(poison(*f, 0x3d0001000, 0x1000, 0x40, 3).build(), "unknown trace_type 3");
    one(poison(*f, 0x3d0001000, 0x1000, 0x40, 0, "").build(), "an hpa without a region");
    one(poison(*f, 0x3d0001000, 0x1000, 0x40, 0, "reg").build(), "region is neither");
    auto r = poison(*f).build();
    r.back() = 'x'; // region's NUL
    one(r, "field region: not one NUL-terminated string");
    r = poison(*f).build();
    r[r.size() - 5] = 0; // a NUL inside region
    one(r, "field region: not one NUL-terminated string");
    auto loc = poison(*f);
    loc.num("memdev", 4000u | 5u << 16);
    one(loc.build(), "field memdev: a string outside the record");
    loc = poison(*f);
    loc.num("memdev", 0);
    one(loc.build(), "field memdev: a string outside the record");
    r = poison(*f).build();
    r.resize(f->poison()->min_size - 4);
    one(r, "shorter than its fields");
    {
        // type_len 0 with a length word of 4: a record of no bytes.
        auto b = decode(f, PageBuilder().word(0).word(4).event(poison(*f).build()).build());
        EXPECT_EQ(b.records.size(), 1u);
        ASSERT_EQ(b.malformed.size(), 1u);
        EXPECT_NE(b.malformed[0].find("a record of 0 bytes: no event id"), std::string::npos);
    }
    one(dc(*f, 4).build(), "unknown event_type 4");
    one(dc(*f, 1, 0, 0).build(), "length 0: an empty extent");
    one(dc(*f, 0, kMax, 2).build(), "dpa_start + length passes 2^64");
    auto m = dc(*f);
    m.data()[m.build().size() - 18] = 'X'; // memdev "mem0" -> "Xem0"
    one(m.build(), "memdev is not memN");
}

TEST(TraceDecoder, AnotherEventsRecordIsIgnored) {
    auto f = formats();
    auto other = poison(*f).build();
    other[0] = 0x01; // common_type 993: not ours
    auto b = decode(f, PageBuilder().event(other).build());
    EXPECT_TRUE(b.empty());
}

TEST(TraceDecoder, APageThatIsNotSoundIsMalformedWhole) {
    auto f = formats();
    auto rec = poison(*f).build();
    auto whole = [&](const std::vector<std::uint8_t>& page, const std::string& why) {
        auto b = decode(f, page);
        EXPECT_TRUE(b.records.empty()) << why;
        ASSERT_EQ(b.malformed.size(), 1u) << why;
        EXPECT_NE(b.malformed[0].find(why), std::string::npos) << b.malformed[0];
    };
    auto page = PageBuilder().event(rec).event(rec).build();
    whole(std::vector<std::uint8_t>(page.begin(), page.begin() + 10), "10 bytes, not a page");
    whole(std::vector<std::uint8_t>(page.begin(), page.begin() + 100), "in 84 read"); // truncated
    whole(PageBuilder().event(rec).commit(5000).build(), "data of 5000 bytes");
    whole(PageBuilder().event(rec).commit(rec.size() + 2).build(), "in 4080 read");
    whole(PageBuilder().word(28).build(), "an event past the data");
    whole(PageBuilder().word(0).word(0).build(), "impossible length");
    whole(PageBuilder().word(0).word(0xffffffffu).build(), "impossible length");
    whole(PageBuilder().word(0).build(), "an event header past the data");
    whole(PageBuilder().word(29 | 1 << 5).word(0xfffffff0u).word(0).word(0).build(),
          "a padding event of an impossible length");
    whole(PageBuilder().word(30).build(), "an event past the data");
    // A padding header that ends the data, with a "negative" length word
    // after it (past commit, in the page): kbuffer would go back.
    auto back = PageBuilder().event(rec).word(29 | 1 << 5).build();
    const std::uint32_t minus = 0xffffff00u;
    std::memcpy(back.data() + 16 + rec.size() + 4 + 4, &minus, 4);
    whole(back, "a padding event of an impossible length");
    whole(PageBuilder().event(rec).missed(2).commit(4076u | 3u << 30).build(),
          "the count of missed events past what was read");
    // A padding to the end of the data ends the page, as kbuffer ends it.
    auto b = decode(f, PageBuilder().event(rec).padding(64).build());
    EXPECT_EQ(b.records.size(), 1u);
    EXPECT_TRUE(b.malformed.empty());
}

} // namespace
} // namespace tagmem
