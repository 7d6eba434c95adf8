// SPDX-License-Identifier: Apache-2.0
// Claiming offered CXL Dynamic Capacity (core/claim.hpp) on the fake host:
// what is written where, and every refusal with nothing written.
#include "claim.hpp"

#include "release_requests.hpp"

#include "discovery.hpp"
#include "fake_host_os.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <cstring>

namespace tagmem {
namespace {

using fake::DaxSpec;
using fake::FakeHostOs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::SizeIs;

constexpr const char* kTag = "5be13bce-ae34-4a77-b6c3-16df975fcf1a";
constexpr const char* kOther = "6f1c2d3e-0000-4000-8000-000000000002";
constexpr const char* kNil = "00000000-0000-0000-0000-000000000000";
constexpr std::uint64_t kMiB = 1ull << 20;
constexpr const char* kRegionDir =
    "/sys/devices/platform/ACPI0017:00/root0/decoder0.0/region0/dax_region0";

Uuid U(const char* text) {
    return Uuid::parse(text).value_or(Uuid());
}

// A DC region as a v11 kernel leaves it after the region is made: a 0-size
// seed dax0.0 without a driver, its uuid the null UUID.
DaxDevice add_seed(FakeHostOs& os, int id = 0) {
    return os.add_dcd_device(DaxSpec{}.at(0, id).range(0x3d0000000, 0).in_mode(DevMode::disabled),
                             kNil);
}

TagRecord offered(const char* tag, std::vector<Extent> extents) {
    TagRecord r;
    r.tag = U(tag);
    r.source = TagSource::dcd;
    r.state = TagState::offered;
    r.offered_extents = std::move(extents);
    return r;
}

Extent extent(std::uint32_t region, std::uint32_t index, std::uint64_t offset, std::uint64_t length,
              const char* tag = kTag) {
    return Extent{ExtentName{region, index}, offset, length, U(tag)};
}

TEST(Claim, WritesTheTagToTheSeedAndBindsIt) {
    FakeHostOs os;
    DaxDevice seed = add_seed(os);
    os.add_dcd_extent(seed, 1, 0, 256 * kMiB, std::string(kTag));
    auto claimed = claim_offered(offered(kTag, {extent(0, 1, 0, 256 * kMiB)}), os);
    ASSERT_TRUE(claimed.ok()) << claimed.error().message;
    EXPECT_EQ(claimed->device, "dax0.0");
    EXPECT_TRUE(claimed->bound.ok()) << claimed->bound.error().message;
    EXPECT_THAT(os.writes(), ElementsAre(Pair("/sys/bus/dax/devices/dax0.0/uuid", kTag)));
    // No bind file (device_dax not loaded): libdaxctl loads and binds it.
    EXPECT_THAT(os.enabled(), ElementsAre("dax0.0"));
}

TEST(Claim, BindsThroughTheKernelsBindFileWhenTheDriverIsLoaded) {
    FakeHostOs os;
    DaxDevice seed = add_seed(os);
    os.add_dcd_extent(seed, 1, 0, 256 * kMiB, std::string(kTag));
    os.add_file("/sys/bus/dax/drivers/device_dax/bind", "");
    auto claimed = claim_offered(offered(kTag, {extent(0, 1, 0, 256 * kMiB)}), os);
    ASSERT_TRUE(claimed.ok()) << claimed.error().message;
    // The fake's bind file binds nothing: the driver link is what counts.
    ASSERT_FALSE(claimed->bound.ok());
    EXPECT_THAT(claimed->bound.error().message,
                HasSubstr("dax0.0 took the tag but device_dax did not bind it"));
    EXPECT_THAT(os.writes(), ElementsAre(Pair("/sys/bus/dax/devices/dax0.0/uuid", kTag),
                                         Pair("/sys/bus/dax/drivers/device_dax/bind", "dax0.0")));
    EXPECT_THAT(os.enabled(), IsEmpty());
}

TEST(Claim, TheScanFindsTheTagOfferedAndTheSeedUntagged) {
    FakeHostOs os;
    DaxDevice seed = add_seed(os);
    os.add_dcd_extent(seed, 1, 0, 256 * kMiB, std::string(kTag));
    os.add_dcd_extent(seed, 2, 256 * kMiB, 256 * kMiB, std::string(kNil)); // untagged
    auto scan = scan_host(Config{}, os);
    ASSERT_TRUE(scan.ok()) << scan.error().message;
    ASSERT_EQ(scan->tags.size(), 1u); // the null UUID is no tag
    EXPECT_EQ(scan->tags[0].tag, U(kTag));
    EXPECT_EQ(scan->tags[0].state, TagState::offered);
    ASSERT_EQ(scan->tags[0].offered_extents.size(), 1u);
    EXPECT_EQ(scan->tags[0].offered_extents[0].name, "extent0.1");
    ASSERT_EQ(scan->untagged.size(), 1u);
    EXPECT_EQ(scan->untagged[0].device, "dax0.0");
}

TEST(Claim, SkipsDevicesThatAreNoSeed) {
    FakeHostOs os;
    // 0 bytes but bound, 0 bytes but tagged (being torn down), claimed: none is a seed.
    os.add_dcd_device(DaxSpec{}.at(0, 0).range(0x3d0000000, 0), kNil);
    os.add_dcd_device(DaxSpec{}.at(0, 1).range(0x3d0000000, 0).in_mode(DevMode::disabled), kOther);
    os.add_dcd_device(DaxSpec{}.at(0, 2).range(0x3d0000000, 256 * kMiB), kOther);
    DaxDevice seed = add_seed(os, 3);
    os.add_dcd_extent(seed, 1, 256 * kMiB, 256 * kMiB, std::string(kTag));
    auto claimed = claim_offered(offered(kTag, {extent(0, 1, 256 * kMiB, 256 * kMiB)}), os);
    ASSERT_TRUE(claimed.ok()) << claimed.error().message;
    EXPECT_EQ(claimed->device, "dax0.3");
}

TEST(Claim, AsksTheRegionForASeedWhenItHasNone) {
    FakeHostOs os;
    DaxDevice claimed =
        os.add_dcd_device(DaxSpec{}.at(0, 0).range(0x3d0000000, 256 * kMiB), kOther);
    os.add_file(std::string(kRegionDir) + "/dax_region/create", "");
    os.add_dcd_extent(claimed, 2, 512 * kMiB, 256 * kMiB, std::string(kTag));
    auto device = claim_offered(offered(kTag, {extent(0, 2, 512 * kMiB, 256 * kMiB)}), os);
    // The fake makes no device of the write, as a kernel without capacity
    // would not: the claim says so and writes no tag anywhere.
    ASSERT_FALSE(device.ok());
    EXPECT_EQ(device.error().code, ENODEV);
    EXPECT_THAT(device.error().message, HasSubstr("made no seed"));
    EXPECT_THAT(os.writes(),
                ElementsAre(Pair(std::string(kRegionDir) + "/dax_region/create", "1")));
    EXPECT_THAT(os.enabled(), IsEmpty());
}

TEST(Claim, NoSeedAndNoCreateIsAnError) {
    FakeHostOs os;
    DaxDevice claimed =
        os.add_dcd_device(DaxSpec{}.at(0, 0).range(0x3d0000000, 256 * kMiB), kOther);
    os.add_dcd_extent(claimed, 2, 512 * kMiB, 256 * kMiB, std::string(kTag));
    auto device = claim_offered(offered(kTag, {extent(0, 2, 512 * kMiB, 256 * kMiB)}), os);
    ASSERT_FALSE(device.ok());
    EXPECT_THAT(device.error().message, HasSubstr("no seed device, and none can be made"));
}

TEST(Claim, TheKernelRefusingTheTagBindsNothing) {
    FakeHostOs os;
    DaxDevice seed = add_seed(os);
    os.add_dcd_extent(seed, 1, 0, 256 * kMiB, std::string(kTag));
    os.fail("/sys/bus/dax/devices/dax0.0/uuid", ENOENT); // released meanwhile
    auto device = claim_offered(offered(kTag, {extent(0, 1, 0, 256 * kMiB)}), os);
    ASSERT_FALSE(device.ok());
    EXPECT_THAT(device.error().message, HasSubstr("the kernel refused to give dax0.0 the tag"));
    EXPECT_THAT(os.enabled(), IsEmpty());
}

TEST(Claim, ABindFailureIsReportedWithTheDevice) {
    FakeHostOs os;
    DaxDevice seed = add_seed(os);
    os.add_dcd_extent(seed, 1, 0, 256 * kMiB, std::string(kTag));
    os.fail_enable(EBUSY);
    auto claimed = claim_offered(offered(kTag, {extent(0, 1, 0, 256 * kMiB)}), os);
    ASSERT_TRUE(claimed.ok()) << claimed.error().message; // dax0.0 took the tag
    ASSERT_FALSE(claimed->bound.ok());
    EXPECT_THAT(claimed->bound.error().message,
                HasSubstr("dax0.0 took the tag but device_dax would not bind it"));
}

// Inconsistent extents are refused with the reason, and nothing is written.
TEST(Claim, RefusesInconsistentExtentsWritingNothing) {
    struct Case {
        std::vector<Extent> extents;
        const char* why;
    };
    const Case cases[] = {
        {{extent(0, 1, 0, 256 * kMiB), extent(1, 1, 0, 256 * kMiB)}, "lie in two regions"},
        {{extent(0, 1, kMiB, 256 * kMiB)}, "is not aligned"},
        {{extent(0, 1, 0, 3 * kMiB)}, "is not aligned"},
        {{extent(0, 1, 0, 0)}, "is not aligned"},
        {{extent(0, 1, 0, 256 * kMiB), extent(0, 2, 128 * kMiB, 256 * kMiB)}, "overlap"},
        {{}, "no extent carries it"},
    };
    for (const auto& c : cases) {
        FakeHostOs os;
        DaxDevice seed = add_seed(os);
        auto record = offered(kTag, c.extents);
        auto why = claim_refusal(record);
        ASSERT_TRUE(why.has_value()) << c.why;
        EXPECT_THAT(*why, HasSubstr(c.why));
        auto device = claim_offered(record, os);
        ASSERT_FALSE(device.ok());
        EXPECT_EQ(device.error().code, EINVAL);
        EXPECT_THAT(os.writes(), IsEmpty()) << c.why;
        EXPECT_THAT(os.enabled(), IsEmpty()) << c.why;
    }
}

TEST(Claim, OnlyOfferedTagsAreClaimed) {
    auto r = offered(kTag, {extent(0, 1, 0, 256 * kMiB)});
    for (TagState s :
         {TagState::ready, TagState::disabled, TagState::conflict, TagState::system_ram}) {
        r.state = s;
        auto why = claim_refusal(r);
        ASSERT_TRUE(why.has_value());
        EXPECT_THAT(*why, HasSubstr("not offered"));
    }
}

TEST(Claim, PolicyFollowsTheTagThenTheDefaults) {
    Config c = parse_config("[tag 5be13bce-ae34-4a77-b6c3-16df975fcf1a]\nclaim = manual\n", "t");
    ASSERT_THAT(c.errors, IsEmpty());
    EXPECT_FALSE(claims_automatically(c, U(kTag)));
    EXPECT_TRUE(claims_automatically(c, U(kOther)));
    c = parse_config("[defaults]\nclaim = manual\n[tag 6f1c2d3e-0000-4000-8000-000000000002]\n"
                     "claim = auto\n",
                     "t");
    ASSERT_THAT(c.errors, IsEmpty());
    EXPECT_FALSE(claims_automatically(c, U(kTag)));
    EXPECT_TRUE(claims_automatically(c, U(kOther)));
    EXPECT_TRUE(claims_automatically(Config{}, U(kTag))); // the default: claim
}

TEST(Claim, BadClaimSettingsAreErrors) {
    for (const char* text :
         {"[defaults]\nclaim = yes\n", "[tag 5be13bce-ae34-4a77-b6c3-16df975fcf1a]\nclaim =\n",
          "[defaults]\nowner = root\n", "[defaults]\nclaim = auto\n[defaults]\n",
          "[defaults]\nclaim = auto\nclaim = manual\n"}) {
        Config c = parse_config(text, "t");
        EXPECT_FALSE(c.errors.empty()) << text;
        EXPECT_TRUE(c.tags.empty()) << text;
    }
}

// --- giving a claimed tag's capacity back (unclaim_device) --------------

// dax0.1 holds kTag's 256 MiB and is bound to device_dax; the kernel's
// unbind, size and delete files exist.
DaxDevice add_claimed(FakeHostOs& os, DevMode mode = DevMode::devdax) {
    add_seed(os);
    DaxDevice d =
        os.add_dcd_device(DaxSpec{}.at(0, 1).range(0x3d0000000, 256 * kMiB).in_mode(mode), kTag);
    os.add_file("/sys/bus/dax/drivers/device_dax/unbind", "");
    os.add_file("/sys/bus/dax/drivers/device_dax/bind", "");
    os.add_file(std::string(kRegionDir) + "/dax_region/delete", "");
    os.add_file("/sys/bus/dax/devices/dax0.1/size", "268435456\n");
    return d;
}

auto nobody() {
    return []() -> Result<std::vector<DeviceUser>> { return std::vector<DeviceUser>{}; };
}

TEST(Unclaim, UnbindsThenShrinksThenDeletes) {
    FakeHostOs os;
    DaxDevice d = add_claimed(os);
    int looked = 0;
    auto users = [&]() -> Result<std::vector<DeviceUser>> {
        // Asked once device_dax let the device go: no open can race it.
        EXPECT_THAT(os.writes(), SizeIs(1));
        ++looked;
        return std::vector<DeviceUser>{};
    };
    auto done = unclaim_device(d, os, users);
    ASSERT_TRUE(done.ok()) << done.error().message;
    EXPECT_EQ(looked, 1);
    EXPECT_THAT(os.writes(),
                ElementsAre(Pair("/sys/bus/dax/drivers/device_dax/unbind", "dax0.1"),
                            Pair("/sys/bus/dax/devices/dax0.1/size", "0"),
                            Pair(std::string(kRegionDir) + "/dax_region/delete", "dax0.1")));
}

TEST(Unclaim, AUserFoundAfterTheUnbindKeepsTheTagAndBindsAgain) {
    FakeHostOs os;
    DaxDevice d = add_claimed(os);
    auto users = []() -> Result<std::vector<DeviceUser>> {
        return std::vector<DeviceUser>{{4242, "famfs", "mapping 7f00-7f10"}};
    };
    auto done = unclaim_device(d, os, users);
    ASSERT_FALSE(done.ok());
    EXPECT_EQ(done.error().code, kInUseError);
    EXPECT_THAT(done.error().message, HasSubstr("in use by PID 4242 (famfs, mapping 7f00-7f10)"));
    EXPECT_THAT(done.error().message, HasSubstr("keeps the tag"));
    // Nothing of the capacity was given back; device_dax has it again.
    EXPECT_THAT(os.writes(), ElementsAre(Pair("/sys/bus/dax/drivers/device_dax/unbind", "dax0.1"),
                                         Pair("/sys/bus/dax/drivers/device_dax/bind", "dax0.1")));
}

TEST(Unclaim, AFailedLookIsInUse) {
    FakeHostOs os;
    DaxDevice d = add_claimed(os);
    auto users = []() -> Result<std::vector<DeviceUser>> {
        return make_error(ETIMEDOUT, "the scan of /proc timed out");
    };
    auto done = unclaim_device(d, os, users);
    ASSERT_FALSE(done.ok());
    EXPECT_THAT(done.error().message, HasSubstr("cannot tell who uses dax0.1"));
    EXPECT_THAT(os.writes(), SizeIs(2)); // unbind, bind
}

TEST(Unclaim, AnUnboundDeviceIsNotBoundByIt) {
    FakeHostOs os;
    DaxDevice d = add_claimed(os, DevMode::disabled);
    ASSERT_TRUE(unclaim_device(d, os, nobody()).ok());
    EXPECT_THAT(os.writes(),
                ElementsAre(Pair("/sys/bus/dax/devices/dax0.1/size", "0"),
                            Pair(std::string(kRegionDir) + "/dax_region/delete", "dax0.1")));
}

TEST(Unclaim, RefusalsChangeNothing) {
    FakeHostOs os;
    DaxDevice d = add_claimed(os, DevMode::system_ram);
    auto done = unclaim_device(d, os, nobody());
    ASSERT_FALSE(done.ok());
    EXPECT_THAT(done.error().message, HasSubstr("system RAM"));
    DaxDevice hmem = os.add_hmem_device(DaxSpec{}.at(7, 0));
    done = unclaim_device(hmem, os, nobody());
    ASSERT_FALSE(done.ok());
    EXPECT_THAT(done.error().message, HasSubstr("not a device of a DC region"));
    // The unbind refused: nothing else is tried.
    FakeHostOs os2;
    DaxDevice d2 = add_claimed(os2);
    os2.fail("/sys/bus/dax/drivers/device_dax/unbind", EBUSY);
    done = unclaim_device(d2, os2, nobody());
    ASSERT_FALSE(done.ok());
    EXPECT_THAT(done.error().message, HasSubstr("nothing was changed"));
    EXPECT_THAT(os.writes(), IsEmpty());
    EXPECT_THAT(os2.writes(), IsEmpty());
}

TEST(Unclaim, AShrinkTheKernelRefusesBindsAgain) {
    FakeHostOs os;
    DaxDevice d = add_claimed(os);
    os.fail("/sys/bus/dax/devices/dax0.1/size", EOPNOTSUPP);
    auto done = unclaim_device(d, os, nobody());
    ASSERT_FALSE(done.ok());
    EXPECT_EQ(done.error().code, EOPNOTSUPP);
    EXPECT_THAT(done.error().message, HasSubstr("would not shrink dax0.1"));
    EXPECT_THAT(os.writes(), ElementsAre(Pair("/sys/bus/dax/drivers/device_dax/unbind", "dax0.1"),
                                         Pair("/sys/bus/dax/drivers/device_dax/bind", "dax0.1")));
}

TEST(Unclaim, TheRegionKeepingTheEmptyDeviceAsItsSeedIsNoFailure) {
    FakeHostOs os;
    DaxDevice d = add_claimed(os);
    os.fail(std::string(kRegionDir) + "/dax_region/delete", EBUSY);
    EXPECT_TRUE(unclaim_device(d, os, nobody()).ok());
    os.heal();
    os.fail(std::string(kRegionDir) + "/dax_region/delete", EACCES);
    auto done = unclaim_device(d, os, nobody());
    ASSERT_FALSE(done.ok());
    EXPECT_THAT(done.error().message, HasSubstr("gave its capacity back but could not be deleted"));
}

// --- releases the orchestrator asked for (ReleaseRequests) ----------------

TEST(ReleaseRequests, TheFirstRequestCountsAndGoneTagsAreForgotten) {
    ReleaseRequests rr;
    auto r = std::make_shared<const TagRecord>(offered(kTag, {}));
    EXPECT_EQ(rr.shown(r), r); // nothing asked: the same record
    EXPECT_TRUE(rr.note(U(kTag), 100));
    EXPECT_FALSE(rr.note(U(kTag), 200)); // asked again: the first time stays
    auto shown = rr.shown(r);
    EXPECT_EQ(shown->release_requested, 100);
    EXPECT_EQ(rr.shown(shown), shown);
    EXPECT_EQ(rr.shown(std::make_shared<const TagRecord>(offered(kOther, {})))->release_requested,
              0);
    rr.forget(U(kTag));
    EXPECT_FALSE(rr.requested(U(kTag)));
    EXPECT_EQ(rr.shown(shown)->release_requested, 0); // a new allocation with the same tag
    EXPECT_TRUE(rr.note(U(kTag), 0));                 // a clock at 0 still marks
    EXPECT_NE(rr.shown(r)->release_requested, 0);
}

TEST(ReleaseRequests, AFloodKeepsTheNewestWithinTheBound) {
    ReleaseRequests rr;
    for (std::size_t i = 0; i < ReleaseRequests::kMaxTags + 10; ++i) {
        std::array<std::uint8_t, 16> b{};
        std::memcpy(b.data(), &i, sizeof i);
        rr.note(Uuid(b), static_cast<std::int64_t>(i + 1));
    }
    EXPECT_EQ(rr.size(), ReleaseRequests::kMaxTags);
    std::array<std::uint8_t, 16> first{};
    EXPECT_FALSE(rr.requested(Uuid(first)));
}

} // namespace
} // namespace tagmem
