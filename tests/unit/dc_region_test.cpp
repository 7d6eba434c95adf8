// SPDX-License-Identifier: Apache-2.0
// Making a memdev's dynamic_ram_1 region (core/dc_region.hpp) on a fake
// sysfs laid out as the DCD guest kernel shows it (docs/dcd.md).
#include "dc_region.hpp"

#include "fake_host_os.hpp"
#include "handoff.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace tagmem {
namespace {

using fake::FakeHostOs;
using ::testing::HasSubstr;
using Writes = std::vector<std::pair<std::string, std::string>>;

const std::string B = "/sys/bus/cxl/devices";

void memdev(FakeHostOs& os, int n, const std::string& serial, const std::string& size) {
    const std::string mem = B + "/mem" + std::to_string(n);
    os.add_file(mem + "/serial", serial + "\n");
    os.add_file(mem + "/dynamic_ram_1/size", size + "\n");
    // As sysfs has it: the endpoint port beside the memdev, its uport the
    // memdev, its decoder inside it.
    const std::string ep = fmt::format("decoder{}.0", n + 2);
    os.add_dir(fmt::format("{}/endpoint{}/{}", B, n + 2, ep));
    os.add_symlink(fmt::format("{}/endpoint{}/uport", B, n + 2),
                   fmt::format("/sys/devices/platform/cxl/mem{}", n));
    os.add_file(B + "/" + ep + "/mode", "ram\n");
    os.add_file(B + "/" + ep + "/dpa_size", "0x0\n");
}

void root(FakeHostOs& os, const std::string& next_region) {
    os.add_file(B + "/decoder0.0/create_dynamic_ram_1_region", next_region + "\n");
    os.add_file(B + "/decoder0.0/interleave_granularity", "256\n");
    for (const char* f : {"interleave_granularity", "interleave_ways", "size", "target0", "commit"})
        os.add_file(B + "/" + next_region + "/" + f, "");
}

TEST(DcRegion, MakesTheRegionAsTheAdministratorsStepsDo) {
    FakeHostOs os;
    memdev(os, 0, "0x99", "0x10000000");
    root(os, "region0");
    auto r = make_dc_regions(os, {0x99});
    ASSERT_TRUE(r.failures.empty()) << r.failures.front();
    ASSERT_EQ(r.made.size(), 1u);
    EXPECT_EQ(r.made[0].region, "region0");
    EXPECT_EQ(r.made[0].decoder, "decoder2.0");
    EXPECT_EQ(r.made[0].size, 0x10000000u);
    EXPECT_EQ(os.writes(), (Writes{{B + "/decoder0.0/create_dynamic_ram_1_region", "region0"},
                                   {B + "/region0/interleave_granularity", "256"},
                                   {B + "/region0/interleave_ways", "1"},
                                   {B + "/decoder2.0/mode", "dynamic_ram_1"},
                                   {B + "/decoder2.0/dpa_size", "268435456"},
                                   {B + "/region0/size", "268435456"},
                                   {B + "/region0/target0", "decoder2.0"},
                                   {B + "/region0/commit", "1"}}));
}

TEST(DcRegion, OnlyTheNamedMemdevsAndNeverTwice) {
    FakeHostOs os;
    memdev(os, 0, "0x1", "0x10000000");
    memdev(os, 1, "0x2", "0x0"); // no DC partition
    root(os, "region0");
    os.add_file(B + "/decoder2.0/mode", "dynamic_ram_1\n"); // made before
    os.add_file(B + "/decoder2.0/dpa_size", "0x10000000\n");
    auto r = make_dc_regions(os, {0x1, 0x2});
    ASSERT_EQ(r.made.size(), 1u);
    EXPECT_EQ(r.made[0].region, "");
    EXPECT_TRUE(os.writes().empty());
    EXPECT_TRUE(make_dc_regions(os, {0x7}).made.empty());
}

TEST(DcRegion, AFailedStepIsReportedWithItsPath) {
    FakeHostOs os;
    memdev(os, 0, "0x99", "0x10000000");
    root(os, "region0");
    os.fail(B + "/region0/commit", ENXIO);
    auto r = make_dc_regions(os, {});
    ASSERT_EQ(r.failures.size(), 1u);
    EXPECT_THAT(r.failures[0], HasSubstr("mem0: "));
    EXPECT_THAT(r.failures[0], HasSubstr("region0/commit"));
}

TEST(DcRegion, TheHandoffItemDecidesInAGuest) {
    FakeHostOs os;
    memdev(os, 0, "0x99", "0x10000000");
    root(os, "region0");
    // No fw_cfg at all: not a guest handed CXL tags, nothing is touched.
    EXPECT_TRUE(make_handed_dc_regions(os, 0).made.empty());
    os.add_file(kHandoffPath,
                R"({"format":"tagmem-handoff","version":1,"tags":[],"cxl":{"make_dc_regions":)"
                R"(true,"tags":[{"tag":"5be13bce-ae34-4a77-b6c3-16df975fcf1a","name":"n",)"
                R"("shareable":true,"size":268435456,"device":"d","serial":153}]}})");
    auto r = make_handed_dc_regions(os, 0);
    ASSERT_EQ(r.made.size(), 1u);
    // No DAX region appears on a fake host: said, not hidden.
    ASSERT_EQ(r.failures.size(), 1u);
    EXPECT_THAT(r.failures[0], HasSubstr("no DAX region"));
}

} // namespace
} // namespace tagmem
