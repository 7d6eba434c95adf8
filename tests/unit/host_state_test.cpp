// SPDX-License-Identifier: Apache-2.0
// HostState: incremental updates (what hotplug drives), on fake hosts.
#include "host_state.hpp"

#include "fake_host_os.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace tagmem {
namespace {

using fake::DaxSpec;
using fake::FakeHostOs;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr const char* kA = "aaaaaaaa-0000-4000-8000-00000000000a";
constexpr const char* kB = "bbbbbbbb-0000-4000-8000-00000000000b";
constexpr std::uint64_t GiB = 1ull << 30;

Uuid U(const char* s) {
    return *Uuid::parse(s);
}

std::vector<Uuid> upserted(const TagDelta& d) {
    std::vector<Uuid> out;
    for (const auto& r : d.upserts)
        out.push_back(r->tag);
    return out;
}

const TagRecord* upsert_of(const TagDelta& d, const char* tag) {
    for (const auto& r : d.upserts)
        if (r->tag == U(tag))
            return r.get();
    return nullptr;
}

class HostStateTest : public ::testing::Test {
  protected:
    FakeHostOs os;
    HostState state{os};
};

TEST_F(HostStateTest, ADeviceThatAppearsPublishesItsTag) {
    DaxDevice d = os.add_dcd_device(DaxSpec{}.at(0, 0), kA);
    os.add_dcd_extent(d, 0, 0, GiB, std::string(kA));
    TagDelta delta = state.refresh({d.name});
    ASSERT_THAT(upserted(delta), ::testing::ElementsAre(U(kA)));
    const TagRecord* r = upsert_of(delta, kA);
    EXPECT_EQ(r->state, TagState::ready);
    EXPECT_EQ(r->device()->dev.name, d.name);
    EXPECT_THAT(r->device()->extents, SizeIs(1));
    EXPECT_THAT(delta.removals, IsEmpty());
    EXPECT_EQ(state.tag_count(), 1u);
}

TEST_F(HostStateTest, ADeviceThatVanishesLeavesItsExtentsOffered) {
    DaxDevice d = os.add_dcd_device(DaxSpec{}.at(0, 0), kA);
    os.add_dcd_extent(d, 0, 0, GiB, std::string(kA));
    (void)state.refresh({d.name});
    os.remove("/sys/bus/dax/devices/" + d.name);
    os.remove(d.sysfs_path());
    TagDelta delta = state.refresh({d.name});
    const TagRecord* r = upsert_of(delta, kA);
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(r->state, TagState::offered);
    EXPECT_THAT(r->offered_extents, SizeIs(1));
    // The extent released too: the tag is gone.
    os.remove(d.region_path() + "/extent0.0");
    delta = state.poll_extents();
    EXPECT_THAT(delta.removals, ::testing::ElementsAre(U(kA)));
    EXPECT_EQ(state.tag_count(), 0u);
}

TEST_F(HostStateTest, ADeviceReleasedWithItsExtentsVanishesInOneStep) {
    DaxDevice d = os.add_dcd_device(DaxSpec{}.at(0, 0), kA);
    os.add_dcd_extent(d, 0, 0, GiB, std::string(kA));
    (void)state.refresh({d.name});
    os.remove("/sys/bus/dax/devices/" + d.name);
    os.remove(d.sysfs_path());
    os.remove(d.region_path() + "/extent0.0");
    TagDelta delta = state.refresh({d.name});
    EXPECT_THAT(delta.upserts, IsEmpty());
    EXPECT_THAT(delta.removals, ::testing::ElementsAre(U(kA)));
}

TEST_F(HostStateTest, TwoDevicesOneTagIsAConflictUntilOneGoes) {
    DaxDevice a = os.add_dcd_device(DaxSpec{}.at(0, 0), kA);
    DaxDevice b = os.add_dcd_device(DaxSpec{}.at(0, 1), kA);
    TagDelta delta = state.refresh({a.name, b.name});
    ASSERT_NE(upsert_of(delta, kA), nullptr);
    EXPECT_EQ(upsert_of(delta, kA)->state, TagState::conflict);
    EXPECT_THAT(upsert_of(delta, kA)->devices, SizeIs(2));
    os.remove("/sys/bus/dax/devices/" + b.name);
    delta = state.refresh({b.name});
    ASSERT_NE(upsert_of(delta, kA), nullptr);
    EXPECT_EQ(upsert_of(delta, kA)->state, TagState::ready);
}

TEST_F(HostStateTest, ATagMovingBetweenDevicesTouchesBothTags) {
    DaxDevice a = os.add_dcd_device(DaxSpec{}.at(0, 0), kA);
    (void)state.refresh({a.name});
    os.add_file(a.sysfs_path() + "/uuid", std::string(kB) + "\n");
    TagDelta delta = state.refresh({a.name});
    EXPECT_THAT(delta.removals, ::testing::ElementsAre(U(kA)));
    EXPECT_THAT(upserted(delta), ::testing::ElementsAre(U(kB)));
}

TEST_F(HostStateTest, ARejectedDeviceIsReportedAndPublishesNothing) {
    DaxDevice a = os.add_dcd_device(DaxSpec{}.at(0, 0), kA);
    os.add_char_device(a.dev_path(), 1, 3);
    TagDelta delta = state.refresh({a.name});
    EXPECT_TRUE(delta.empty());
    auto snap = state.snapshot();
    ASSERT_THAT(snap.rejected, SizeIs(1));
    EXPECT_EQ(snap.rejected[0].device, a.name);
    // Fixed: the rejection is lifted.
    os.add_char_device(a.dev_path(), a.devno.major, a.devno.minor);
    delta = state.refresh({a.name});
    EXPECT_THAT(upserted(delta), ::testing::ElementsAre(U(kA)));
    EXPECT_THAT(state.snapshot().rejected, IsEmpty());
}

TEST_F(HostStateTest, AnEventForANonDeviceChangesNothing) {
    EXPECT_TRUE(state.refresh({"dax9.9"}).empty());
    EXPECT_TRUE(state.refresh({"not-a-device"}).empty());
    EXPECT_THAT(state.snapshot().rejected, IsEmpty());
}

TEST_F(HostStateTest, ExtentPollsReadNothingWhileNothingChanged) {
    DaxDevice d = os.add_dcd_device(DaxSpec{}.at(0, 0), kA);
    os.add_dcd_extent(d, 0, 0, GiB, std::string(kA));
    (void)state.refresh({d.name});
    ASSERT_TRUE(state.has_dc_regions());
    (void)state.poll_extents(); // learns the region's signature
    auto reads_before = os.reads().size();
    for (int i = 0; i < 5; ++i)
        EXPECT_TRUE(state.poll_extents().empty());
    EXPECT_EQ(os.reads().size(), reads_before) << "an unchanged region was re-read";
}

TEST_F(HostStateTest, ExtentsArrivingAndLeavingBetweenPolls) {
    DaxDevice d = os.add_dcd_device(DaxSpec{}.at(0, 0), kA);
    os.add_dcd_extent(d, 0, 0, GiB, std::string(kA));
    (void)state.refresh({d.name});
    (void)state.poll_extents();
    os.add_dcd_extent(d, 1, GiB, GiB, std::string(kB));
    TagDelta delta = state.poll_extents();
    ASSERT_THAT(upserted(delta), ::testing::ElementsAre(U(kB)));
    EXPECT_EQ(upsert_of(delta, kB)->state, TagState::offered);
    // kA's device is untouched by kB's extent.
    EXPECT_EQ(upsert_of(delta, kA), nullptr);
    os.remove(d.region_path() + "/extent0.1");
    delta = state.poll_extents();
    EXPECT_THAT(delta.removals, ::testing::ElementsAre(U(kB)));
    EXPECT_THAT(delta.upserts, IsEmpty());
}

TEST_F(HostStateTest, ARescanMakesThePublishedTagsExactlyTheHosts) {
    DaxDevice a = os.add_dcd_device(DaxSpec{}.at(0, 0), kA);
    DaxDevice b = os.add_nvdimm_device(DaxSpec{}.at(1, 0), kB, "");
    auto first = state.rescan(Config{});
    ASSERT_TRUE(first.ok());
    EXPECT_THAT(upserted(*first), ::testing::UnorderedElementsAre(U(kA), U(kB)));
    // b goes, c comes: one removal, one addition, a unchanged (an upsert
    // equal to what is published, which the tree skips).
    os.remove("/sys/bus/dax/devices/" + b.name);
    os.remove(b.sysfs_path());
    constexpr const char* kC = "cccccccc-0000-4000-8000-00000000000c";
    (void)os.add_dcd_device(DaxSpec{}.at(0, 1), kC);
    auto second = state.rescan(Config{});
    ASSERT_TRUE(second.ok());
    EXPECT_THAT(second->removals, ::testing::ElementsAre(U(kB)));
    EXPECT_THAT(upserted(*second), ::testing::UnorderedElementsAre(U(kA), U(kC)));
    EXPECT_EQ(*upsert_of(*second, kA), *upsert_of(*first, kA));
    EXPECT_EQ(state.tag_count(), 2u);
    EXPECT_FALSE(state.needs_retry());
}

// libdaxctl read the device number before the device was re-created under
// the same name with another one: the number the tag's node is made with
// is the one checked against /dev and sysfs in this scan, not libdaxctl's.
class StaleDaxctlHost : public FakeHostOs {
  public:
    Result<std::vector<DaxDevice>> daxctl_devices() override {
        auto list = FakeHostOs::daxctl_devices();
        if (list)
            for (auto& d : *list)
                d.devno.minor += 100;
        return list;
    }
};

TEST(HostStateDevno, TheNodeIsMadeWithTheNumberVerifiedInThisScan) {
    StaleDaxctlHost os;
    HostState state(os);
    DaxDevice d = os.add_dcd_device(DaxSpec{}.at(0, 0).minor_number(7), kA);
    auto delta = state.rescan(Config{});
    ASSERT_TRUE(delta.ok());
    const TagRecord* r = upsert_of(*delta, kA);
    ASSERT_NE(r, nullptr);
    ASSERT_NE(r->device(), nullptr);
    EXPECT_EQ(r->device()->dev.devno, d.devno);
}

} // namespace
} // namespace tagmem
