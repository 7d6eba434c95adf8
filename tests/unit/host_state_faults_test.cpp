// SPDX-License-Identifier: Apache-2.0
// Failure is not absence: HostState under injected failures of every errno
// class, during a full rescan, a device refresh and an extent poll. Only a
// "gone" errno may change the published tags; any other failure keeps them
// as they were, asks for a retry, and the retry catches up once the fault
// clears.
#include "host_state.hpp"

#include "fake_host_os.hpp"
#include "tag_tree.hpp"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>

namespace tagmem {
namespace {

using fake::DaxSpec;
using fake::FakeHostOs;
using ::testing::IsEmpty;

constexpr const char* kDcd = "aaaaaaaa-0000-4000-8000-00000000000a";
constexpr const char* kExtentOnly = "bbbbbbbb-0000-4000-8000-00000000000b";
constexpr const char* kConfigured = "cccccccc-0000-4000-8000-00000000000c";
constexpr const char* kNvdimm = "dddddddd-0000-4000-8000-00000000000d";
constexpr const char* kLate = "eeeeeeee-0000-4000-8000-00000000000e";
constexpr std::uint64_t GiB = 1ull << 30;
constexpr std::uint64_t kHmemBase = 0x3000000000;

Uuid U(const char* s) {
    return *Uuid::parse(s);
}

std::string errno_name(int err) {
    const char* name = strerrorname_np(err);
    return name ? name : std::to_string(err);
}

// Failures that say nothing about the device.
const int kTransient[] = {EMFILE, ENFILE, ENOMEM, EIO, EAGAIN, EINTR, EACCES, EPERM, EBUSY};
// Failures that say it is gone.
const int kGone[] = {ENOENT, ENODEV, ENXIO};

TEST(ErrnoClasses, GoneAndTransientAreDisjointAndCoverTheClasses) {
    for (int err : kGone) {
        EXPECT_TRUE(is_gone(err)) << errno_name(err);
        EXPECT_FALSE(is_transient(err)) << errno_name(err);
    }
    for (int err : kTransient) {
        EXPECT_FALSE(is_gone(err)) << errno_name(err);
        EXPECT_TRUE(is_transient(err)) << errno_name(err);
    }
    // Verdicts of tagmem's own checks: neither gone nor worth a retry.
    for (int err : {EINVAL, ERANGE, EEXIST})
        EXPECT_FALSE(is_transient(err)) << errno_name(err);
}

// A host with one tag of each origin: a DCD device and its extent, an
// extent no device claims, configured hmem memory with an owner, and an
// NVDIMM namespace.
class Faults : public ::testing::Test {
  protected:
    void SetUp() override {
        os.add_user("famfs", 1234);
        dcd = os.add_dcd_device(DaxSpec{}.at(0, 0), kDcd);
        os.add_dcd_extent(dcd, 0, 0, GiB, std::string(kDcd));
        os.add_dcd_extent(dcd, 1, GiB, GiB, std::string(kExtentOnly));
        hmem = os.add_hmem_device(DaxSpec{}.at(1, 0).range(kHmemBase, GiB));
        // No resource attribute (older kernels): its range is its mapping's
        // alone, so an unread mapping cannot pass unnoticed.
        os.remove(hmem.sysfs_path() + "/resource");
        nvdimm = os.add_nvdimm_device(DaxSpec{}.at(2, 0), kNvdimm, "");
        config = parse_config(fmt::format("[tag {}]\nmatch-range = {:#x}-{:#x}\nowner = famfs\n"
                                          "mode = 0640\n",
                                          kConfigured, kHmemBase, kHmemBase + GiB - 1),
                              "test.conf");
        ASSERT_THAT(config.errors, IsEmpty());
        auto delta = state.rescan(config);
        ASSERT_TRUE(delta.ok()) << delta.error().message;
        publish(*delta);
        ASSERT_EQ(tags(), (std::set<Uuid>{U(kDcd), U(kExtentOnly), U(kConfigured), U(kNvdimm)}));
        ASSERT_FALSE(state.needs_retry());
        before = tree.records();
    }

    // Publishes as the daemon does; returns the events it caused.
    std::vector<TagEvent> publish(const TagDelta& delta) { return tree.apply(delta).events; }
    std::vector<TagEvent> rescan() {
        auto delta = state.rescan(config);
        return delta ? publish(*delta) : std::vector<TagEvent>{};
    }
    // What the daemon's retry timer does, until nothing is pending (a few
    // rounds at most).
    std::vector<TagEvent> retry_until_clean() {
        std::vector<TagEvent> all;
        for (int i = 0; i < 4 && state.needs_retry(); ++i) {
            auto events = state.needs_rescan() ? rescan() : publish(state.retry());
            all.insert(all.end(), events.begin(), events.end());
        }
        EXPECT_FALSE(state.needs_retry()) << state.retry_reason();
        return all;
    }
    std::set<Uuid> tags() const {
        std::set<Uuid> out;
        for (const auto& r : tree.records())
            out.insert(r->tag);
        return out;
    }
    const TagRecord& record(const char* tag) const {
        static const TagRecord none;
        auto r = tree.find(U(tag));
        EXPECT_NE(r, nullptr) << tag;
        return r ? *r : none;
    }
    // Every record is exactly as it was after the first scan.
    void expect_unchanged(const std::string& what) {
        auto now = tree.records();
        ASSERT_EQ(now.size(), before.size()) << what;
        for (std::size_t i = 0; i < now.size(); ++i)
            EXPECT_TRUE(*now[i] == *before[i]) << what << ": " << now[i]->tag.str() << " changed";
    }
    void break_device(const DaxDevice& d, unsigned ops, int err) {
        os.fail_calls(ops, err, d.sysfs_path());
        os.fail_calls(ops, err, "/sys/bus/dax/devices/" + d.name);
        os.fail_calls(ops, err, d.dev_path());
    }

    FakeHostOs os;
    HostState state{os};
    TagTree tree{"/run/tagmem.nodes"};
    Config config;
    DaxDevice dcd, hmem, nvdimm;
    std::vector<std::shared_ptr<const TagRecord>> before;
};

// --- full rescan -------------------------------------------------------

TEST_F(Faults, RescanWhileOpensFailKeepsEveryTag) {
    // What EMFILE does: every open and readdir fails (libdaxctl then lists
    // nothing), stat and readlink still work.
    for (int err : kTransient) {
        SCOPED_TRACE(errno_name(err));
        os.fail_calls(fake::op_open, err, "/sys");
        EXPECT_THAT(rescan(), IsEmpty());
        expect_unchanged("rescan");
        EXPECT_TRUE(state.needs_retry());
        os.heal();
        EXPECT_THAT(retry_until_clean(), IsEmpty());
        expect_unchanged("after the retry");
    }
}

TEST_F(Faults, RescanWhileEveryCallFailsKeepsEveryTag) {
    for (int err : kTransient) {
        SCOPED_TRACE(errno_name(err));
        os.fail_calls(~0u & ~fake::op_daxctl, err, "/sys");
        os.fail_calls(~0u & ~fake::op_daxctl, err, "/dev");
        EXPECT_THAT(rescan(), IsEmpty());
        expect_unchanged("rescan");
        os.heal();
        EXPECT_THAT(retry_until_clean(), IsEmpty());
        expect_unchanged("after the retry");
    }
}

TEST_F(Faults, RescanThatCannotStartChangesNothing) {
    for (int err : kTransient) {
        SCOPED_TRACE(errno_name(err));
        os.fail_calls(fake::op_daxctl, err);
        EXPECT_FALSE(state.rescan(config).ok());
        EXPECT_TRUE(state.needs_rescan());
        os.heal();
        os.fail_calls(fake::op_major, err);
        EXPECT_FALSE(state.rescan(config).ok());
        EXPECT_TRUE(state.needs_rescan());
        os.heal();
        EXPECT_THAT(retry_until_clean(), IsEmpty());
        expect_unchanged("after the retry");
    }
}

TEST_F(Faults, RescanKeepsADeviceLibdaxctlSilentlyDropped) {
    // libdaxctl leaves out a device it failed to read; the bus still lists
    // it and it reads fine now: kept, and read again by the retry.
    os.daxctl_drops(dcd.name);
    EXPECT_THAT(rescan(), IsEmpty());
    expect_unchanged("rescan");
    EXPECT_TRUE(state.needs_retry());
    EXPECT_THAT(retry_until_clean(), IsEmpty());
    expect_unchanged("after the retry");
}

TEST_F(Faults, RescanKeepsADeviceWhoseReadsFail) {
    for (const DaxDevice* d : {&dcd, &hmem, &nvdimm}) {
        for (int err : kTransient) {
            SCOPED_TRACE(d->name + " " + errno_name(err));
            break_device(*d, fake::op_read | fake::op_resolve, err);
            EXPECT_THAT(rescan(), IsEmpty());
            expect_unchanged("rescan");
            os.heal();
            EXPECT_THAT(retry_until_clean(), IsEmpty());
        }
    }
}

TEST_F(Faults, RescanRemovesADeviceThatIsGone) {
    for (int err : kGone) {
        SCOPED_TRACE(errno_name(err));
        FakeHostOs host;
        HostState s(host);
        TagTree t("/n");
        DaxDevice d = host.add_nvdimm_device(DaxSpec{}.at(2, 0), kNvdimm, "");
        t.apply(*s.rescan(config));
        ASSERT_NE(t.find(U(kNvdimm)), nullptr);
        // Gone from the bus: every call on it says so.
        host.daxctl_drops(d.name);
        host.fail_calls(~0u, err, "/sys/bus/dax/devices/" + d.name);
        host.fail_calls(~0u, err, d.sysfs_path());
        auto events = t.apply(*s.rescan(config)).events;
        ASSERT_EQ(events.size(), 1u);
        EXPECT_EQ(events[0].kind, TagEventKind::removed);
        EXPECT_EQ(t.find(U(kNvdimm)), nullptr);
        EXPECT_FALSE(s.needs_retry());
    }
}

TEST_F(Faults, ConfiguredTagSurvivesUnreadableRangesAndUsers) {
    for (int err : kTransient) {
        SCOPED_TRACE(errno_name(err));
        // The mappings its match-range is checked against, then the owner.
        os.fail_calls(fake::op_read, err, hmem.sysfs_path() + "/mapping0");
        EXPECT_THAT(rescan(), IsEmpty());
        expect_unchanged("ranges unreadable");
        os.heal();
        os.fail_calls(fake::op_lookup, err);
        EXPECT_THAT(rescan(), IsEmpty());
        expect_unchanged("owner not looked up");
        EXPECT_EQ(record(kConfigured).access.uid, 1234u);
        os.heal();
        EXPECT_THAT(retry_until_clean(), IsEmpty());
        expect_unchanged("after the retry");
    }
}

TEST_F(Faults, ChangesMadeDuringAFaultArriveWithTheRetry) {
    os.fail_calls(fake::op_open, EMFILE, "/sys");
    DaxDevice late = os.add_dcd_device(DaxSpec{}.at(0, 1), kLate);
    os.remove(dcd.sysfs_path() + "/uuid");
    os.add_file(dcd.sysfs_path() + "/uuid", "0\n"); // dax0.0 gives up its tag
    EXPECT_THAT(rescan(), IsEmpty());
    os.heal();
    retry_until_clean();
    EXPECT_NE(tree.find(U(kLate)), nullptr);
    EXPECT_EQ(record(kDcd).state, TagState::offered); // its extent remains
    EXPECT_EQ(record(kLate).device()->dev.name, late.name);
}

// --- refresh after a uevent -------------------------------------------

TEST_F(Faults, RefreshWhileReadsFailChangesNothing) {
    for (const DaxDevice* d : {&dcd, &hmem, &nvdimm}) {
        for (int err : kTransient) {
            SCOPED_TRACE(d->name + " " + errno_name(err));
            break_device(*d, ~0u, err);
            EXPECT_THAT(publish(state.refresh({d->name})), IsEmpty());
            expect_unchanged("refresh");
            EXPECT_TRUE(state.needs_retry());
            os.heal();
            EXPECT_THAT(retry_until_clean(), IsEmpty());
            expect_unchanged("after the retry");
        }
    }
}

TEST_F(Faults, RefreshOfADeviceThatIsGoneRemovesItsTag) {
    for (int err : kGone) {
        SCOPED_TRACE(errno_name(err));
        FakeHostOs host;
        HostState s(host);
        TagTree t("/n");
        DaxDevice d = host.add_hmem_device(DaxSpec{}.at(1, 0).range(kHmemBase, GiB));
        t.apply(*s.rescan(config));
        ASSERT_NE(t.find(U(kConfigured)), nullptr);
        host.fail_calls(~0u, err, "/sys/bus/dax/devices/" + d.name);
        host.fail_calls(~0u, err, d.sysfs_path());
        auto events = t.apply(s.refresh({d.name})).events;
        ASSERT_EQ(events.size(), 1u);
        EXPECT_EQ(events[0].kind, TagEventKind::removed);
        EXPECT_FALSE(s.needs_retry());
    }
}

TEST_F(Faults, ARefreshThatFailsIsRetriedAndThenSeesTheChange) {
    os.fail_calls(fake::op_read, EMFILE, hmem.sysfs_path());
    os.add_file(hmem.sysfs_path() + "/target_node", "5\n");
    EXPECT_THAT(publish(state.refresh({hmem.name})), IsEmpty());
    os.heal();
    auto events = retry_until_clean();
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].kind, TagEventKind::changed);
    EXPECT_EQ(record(kConfigured).device()->dev.target_node, 5);
}

// --- extent polling ----------------------------------------------------

TEST_F(Faults, ExtentPollWhileTheRegionCannotBeReadKeepsItsTags) {
    (void)state.poll_extents(); // learns the signatures
    for (int err : kTransient) {
        SCOPED_TRACE(errno_name(err));
        // The offered extent leaves while the region cannot be read.
        os.remove(dcd.region_path() + "/extent0.1");
        os.fail_calls(fake::op_list | fake::op_read, err, dcd.region_path());
        for (int i = 0; i < 12; ++i) // past a full listing, too
            EXPECT_THAT(publish(state.poll_extents()), IsEmpty());
        expect_unchanged("poll");
        EXPECT_TRUE(state.needs_retry());
        os.heal();
        auto events = retry_until_clean();
        ASSERT_EQ(events.size(), 1u);
        EXPECT_EQ(events[0].kind, TagEventKind::removed);
        EXPECT_EQ(events[0].tag, U(kExtentOnly));
        // Back as it was, for the next errno.
        os.add_dcd_extent(dcd, 1, GiB, GiB, std::string(kExtentOnly));
        (void)publish(state.poll_extents());
        (void)publish(state.poll_extents());
        ASSERT_NE(tree.find(U(kExtentOnly)), nullptr);
        before = tree.records();
    }
}

TEST_F(Faults, ExtentPollWhileANewExtentCannotBeReadWaitsForIt) {
    (void)state.poll_extents();
    os.add_dcd_extent(dcd, 2, 2 * GiB, GiB, std::string(kLate));
    os.fail_calls(fake::op_read, EMFILE, dcd.region_path() + "/extent0.2");
    EXPECT_THAT(publish(state.poll_extents()), IsEmpty());
    expect_unchanged("poll");
    os.heal();
    auto events = retry_until_clean();
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].kind, TagEventKind::added);
    EXPECT_EQ(record(kLate).state, TagState::offered);
}

TEST_F(Faults, ExtentPollOfARegionThatIsGoneDropsItsExtents) {
    (void)state.poll_extents();
    for (int err : kGone) {
        SCOPED_TRACE(errno_name(err));
        FakeHostOs host;
        HostState s(host);
        TagTree t("/n");
        DaxDevice d = host.add_dcd_device(DaxSpec{}.at(0, 0), kDcd);
        host.add_dcd_extent(d, 1, GiB, GiB, std::string(kExtentOnly));
        t.apply(*s.rescan(config));
        ASSERT_NE(t.find(U(kExtentOnly)), nullptr);
        host.fail_calls(~0u, err, d.region_path());
        auto events = t.apply(s.poll_extents()).events;
        EXPECT_EQ(t.find(U(kExtentOnly)), nullptr);
        EXPECT_FALSE(events.empty());
    }
}

} // namespace
} // namespace tagmem
