// SPDX-License-Identifier: Apache-2.0
// The guest side of the CDAT hand-off: the table vm-args --cxl writes
// (vm::cdat_table) read back as the guest kernel shows it, and tables that
// are malformed refused with a reason rather than read as figures.
#include "cdat.hpp"
#include "fake_host_os.hpp"
#include "vm_cxl.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace tagmem {
namespace {

using ::testing::HasSubstr;

vm::CxlTag host_tag(const nlohmann::json& perf) {
    vm::CxlTag t;
    t.tag = "c1c1c1c1-0018-4000-8000-0000000000c1";
    t.size = 256ull << 20;
    t.shareable = true;
    t.host = {{"performance", perf}};
    return t;
}

// From JSON text, as the host's tagmem reads it (its figures are unsigned).
std::string table_of(const char* perf) {
    return vm::cdat_table(host_tag(nlohmann::json::parse(perf))).value();
}

// Recompute the checksum after an edit, so only the edit is wrong.
void fix_checksum(std::string& t) {
    t[5] = 0;
    unsigned sum = 0;
    for (char c : t)
        sum += static_cast<unsigned char>(c);
    t[5] = static_cast<char>((256 - sum % 256) % 256);
}

void put16(std::string& t, std::size_t at, unsigned v) {
    t[at] = static_cast<char>(v & 0xff);
    t[at + 1] = static_cast<char>(v >> 8);
}

TEST(Cdat, TheHostsFiguresComeBackFromItsTable) {
    auto t = parse_cdat(table_of(R"({"read_latency_ns":180,"write_latency_ns":210,
        "read_bandwidth_mbps":14000,"write_bandwidth_mbps":9000})"));
    ASSERT_TRUE(t) << t.error().message;
    ASSERT_EQ(t->dsmas.size(), 1u);
    EXPECT_EQ(t->dsmas[0].dpa_length, 256ull << 20);
    EXPECT_TRUE(t->dsmas[0].flags & CdatDsmas::kDynamicCapacity);
    EXPECT_TRUE(t->dsmas[0].flags & CdatDsmas::kShareable);
    EXPECT_EQ(t->dslbis.size(), 4u);
    auto p = cdat_dc_performance(*t);
    ASSERT_TRUE(p);
    EXPECT_EQ(*p, (Performance{180, 210, 14000, 9000}));
}

TEST(Cdat, LargeFiguresTakeACoarserBaseUnit) {
    // 100000 MB/s does not fit 16 bits: entry 10000, base unit 10.
    auto t = parse_cdat(table_of(R"({"read_bandwidth_mbps":100000,"read_latency_ns":70000})"));
    ASSERT_TRUE(t) << t.error().message;
    auto p = cdat_dc_performance(*t);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->read_bandwidth_mbps, 100000u);
    EXPECT_EQ(p->read_latency_ns, 70000u);
    EXPECT_FALSE(p->write_latency_ns);
}

TEST(Cdat, UnknownStructureTypesAreSkipped) {
    std::string t = table_of(R"({"read_latency_ns":180})");
    // A structure of a type CDAT does not define yet, 8 bytes, at the end.
    t += std::string{'\x7f', 0, 8, 0, 1, 2, 3, 4};
    put16(t, 0, static_cast<unsigned>(t.size()));
    fix_checksum(t);
    auto parsed = parse_cdat(t);
    ASSERT_TRUE(parsed) << parsed.error().message;
    EXPECT_EQ(cdat_dc_performance(*parsed)->read_latency_ns, 180u);
}

TEST(Cdat, MalformedTablesAreRefusedWithAReason) {
    const std::string good = table_of(R"({"read_latency_ns":180,"write_bandwidth_mbps":9000})");
    auto why = [](std::string t) {
        auto r = parse_cdat(t);
        return r ? std::string("parsed") : r.error().message;
    };
    EXPECT_THAT(why(good.substr(0, 10)), HasSubstr("shorter than its 16-byte header"));
    // Truncated: fewer bytes than the length field says.
    EXPECT_THAT(why(good.substr(0, good.size() - 1)), HasSubstr("length field"));
    std::string t = good;
    put16(t, 0, 8); // a length shorter than the header
    fix_checksum(t);
    EXPECT_THAT(why(t), HasSubstr("length field 8"));
    t = good;
    t[5] = static_cast<char>(t[5] + 1);
    EXPECT_THAT(why(t), HasSubstr("checksum"));
    t = good;
    put16(t, 16 + 2, 0x4000); // the DSMAS runs past the table
    fix_checksum(t);
    EXPECT_THAT(why(t), HasSubstr("has length 16384"));
    t = good;
    put16(t, 16 + 2, 2); // shorter than a structure header: no progress
    fix_checksum(t);
    EXPECT_THAT(why(t), HasSubstr("has length 2"));
    t = good;
    put16(t, 16 + 24 + 2, 20); // a DSLBIS of the wrong size
    fix_checksum(t);
    EXPECT_THAT(why(t), HasSubstr("not 24"));
    // A table whose length leaves 2 bytes of a structure header.
    t = good.substr(0, 16) + std::string{'\x00', '\x00'};
    put16(t, 0, 18);
    fix_checksum(t);
    EXPECT_THAT(why(t), HasSubstr("cut off"));
}

TEST(Cdat, NoFiguresWithoutOneDynamicCapacityRange) {
    auto t = parse_cdat(table_of(R"({"read_latency_ns":180})"));
    ASSERT_TRUE(t);
    CdatTable two = *t;
    two.dsmas.push_back(two.dsmas[0]);
    two.dsmas[1].handle = 1;
    EXPECT_FALSE(cdat_dc_performance(two));
    CdatTable none = *t;
    none.dsmas[0].flags = 0; // static RAM, not the DC region
    EXPECT_FALSE(cdat_dc_performance(none));
    CdatTable other_handle = *t;
    for (auto& l : other_handle.dslbis)
        l.handle = 3;
    EXPECT_FALSE(cdat_dc_performance(other_handle));
    CdatTable cache = *t;
    for (auto& l : cache.dslbis)
        l.flags = 1; // a memory-side cache's figures, not the memory's
    EXPECT_FALSE(cdat_dc_performance(cache));
}

// As the DCD guest kernel shows it: region0's target0 is the endpoint
// decoder decoder2.0, whose port endpoint2 has the raw table as CDAT.
TEST(Cdat, FoundThroughTheRegionsEndpoint) {
    const std::string region = "/sys/devices/platform/ACPI0017:00/root0/decoder0.0/region0";
    const std::string dax_region = region + "/dax_region0";
    fake::FakeHostOs os;
    os.add_file(region + "/target0", "decoder2.0\n");
    // No CDAT attribute (a device without one): no figures, no error.
    auto none = dc_region_cdat_performance(os, dax_region);
    ASSERT_TRUE(none) << none.error().message;
    EXPECT_FALSE(*none);
    os.add_file("/sys/bus/cxl/devices/endpoint2/CDAT",
                table_of(R"({"read_latency_ns":180,"write_bandwidth_mbps":9000})"));
    auto got = dc_region_cdat_performance(os, dax_region);
    ASSERT_TRUE(got) << got.error().message;
    ASSERT_TRUE(*got);
    EXPECT_EQ(**got, (Performance{180, std::nullopt, std::nullopt, 9000}));
    // A malformed table is an error naming the file.
    os.add_file("/sys/bus/cxl/devices/endpoint2/CDAT", std::string(20, '\1'));
    auto bad = dc_region_cdat_performance(os, dax_region);
    ASSERT_FALSE(bad);
    EXPECT_THAT(bad.error().message, HasSubstr("endpoint2/CDAT: CDAT:"));
    // A target that is no decoder name.
    os.add_file(region + "/target0", "mem0\n");
    EXPECT_FALSE(dc_region_cdat_performance(os, dax_region));
}

} // namespace
} // namespace tagmem
