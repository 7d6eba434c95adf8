// SPDX-License-Identifier: Apache-2.0
// Policy (states, configured tags, access), through HostState on a fake
// host as the daemon and the CLI run it, and the JSON form of its result.
#include "records.hpp"

#include "fake_host_os.hpp"
#include "host_state.hpp"
#include "json_output.hpp"
#include "tag_tree.hpp"

#include <fmt/format.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

namespace tagmem {
namespace {

using nlohmann::json;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::IsSupersetOf;
using ::testing::SizeIs;

constexpr const char* kA = "6f1c2d3e-0000-4000-8000-000000000001";
constexpr const char* kB = "6f1c2d3e-0000-4000-8000-000000000002";
constexpr const char* kC = "6f1c2d3e-0000-4000-8000-000000000003";
constexpr const char* kD = "00000000-0000-4000-8000-000000000004"; // sorts first

Uuid U(const char* text) {
    auto u = Uuid::parse(text);
    EXPECT_TRUE(u.ok()) << text;
    return u.value_or(Uuid());
}

constexpr std::uint64_t kBase = 0x1040000000;
constexpr std::uint64_t kGiB = 1ull << 30;

// A device as the host will show it (Records::build puts it on a fake
// host); the tests change what they need.
ProbedDevice device(int region, int id, std::optional<Uuid> tag = std::nullopt,
                    TagSource source = TagSource::config, DevMode mode = DevMode::devdax) {
    ProbedDevice p;
    p.dev.name = "dax" + std::to_string(region) + "." + std::to_string(id);
    p.dev.region_id = region;
    p.dev.id = id;
    p.dev.devno = DevNumber{252, static_cast<unsigned>(region * 16 + id)};
    p.dev.size = kGiB;
    p.dev.align = 2ull << 20;
    p.dev.resource = kBase + static_cast<std::uint64_t>(region) * kGiB;
    p.dev.target_node = region + 1;
    p.dev.mode = mode;
    p.dev.ranges = {PhysRange{p.dev.resource, p.dev.resource + kGiB - 1}};
    p.dev.set_region_path("/sys/devices/platform/hmem." + std::to_string(region));
    p.numa_node = 0;
    p.tag = tag;
    if (tag)
        p.source = source;
    return p;
}

ProbedDevice dcd(int region, int id, const char* tag, DevMode mode = DevMode::devdax) {
    return device(region, id, U(tag), TagSource::dcd, mode);
}

Config config_from(const std::string& text) {
    Config c = parse_config(text, "test.conf");
    EXPECT_THAT(c.errors, IsEmpty()) << "test config has errors";
    return c;
}

std::string section(const char* tag, const std::string& body) {
    return std::string("[tag ") + tag + "]\n" + body;
}

class Records : public ::testing::Test {
  protected:
    // Users and groups every host of the test knows.
    fake::FakeHostOs os;
    Config empty;
    std::vector<std::unique_ptr<fake::FakeHostOs>> hosts;

    // A fresh host holding these devices, scanned by HostState under the
    // configuration: what tagmem list and tagmemfs see.
    // tweak breaks the host before the scan.
    ScanResult build(const std::vector<ProbedDevice>& devs, const Config& config,
                     const std::function<void(fake::FakeHostOs&)>& tweak = {}) {
        auto& host = *hosts.emplace_back(std::make_unique<fake::FakeHostOs>());
        for (const auto& [name, uid] : users)
            host.add_user(name, uid);
        for (const auto& [name, gid] : groups)
            host.add_group(name, gid);
        for (const auto& p : devs)
            put_on(host, p);
        if (tweak)
            tweak(host);
        HostState state(host);
        auto delta = state.rescan(config);
        EXPECT_TRUE(delta.ok()) << delta.error().message;
        return state.snapshot();
    }
    void add_user(const std::string& name, uid_t uid) {
        users[name] = uid;
        os.add_user(name, uid);
    }
    void add_group(const std::string& name, gid_t gid) {
        groups[name] = gid;
        os.add_group(name, gid);
    }

    static DaxDevice put_on(fake::FakeHostOs& host, const ProbedDevice& p) {
        fake::DaxSpec spec;
        spec.at(p.dev.region_id, p.dev.id).minor_number(p.dev.devno.minor);
        spec.size = p.dev.size;
        spec.align = p.dev.align;
        spec.resource = p.dev.resource;
        spec.target_node = p.dev.target_node;
        spec.numa_node = p.numa_node;
        spec.mode = p.dev.mode;
        DaxDevice d;
        if (p.tag && p.source == TagSource::dcd) {
            d = host.add_dcd_device(spec, p.tag->str());
            for (const auto& e : p.extents)
                host.add_dcd_extent(d, static_cast<int>(e.name.index), e.offset, e.length,
                                    e.tag ? std::optional(e.tag->str()) : std::nullopt);
        } else if (p.tag && p.source == TagSource::nvdimm) {
            d = host.add_nvdimm_device(spec, p.tag->str(), "");
        } else {
            EXPECT_FALSE(p.tag) << "a configured tag comes from the configuration";
            d = host.add_hmem_device(spec);
        }
        const std::vector<PhysRange> ranges(p.dev.ranges.begin(), p.dev.ranges.end());
        if (ranges != std::vector<PhysRange>{{p.dev.resource, p.dev.resource + p.dev.size - 1}}) {
            // Ranges of its own: mapping0, mapping1, ..., and no resource to
            // fall back on when there are none.
            host.remove(d.sysfs_path() + "/mapping0");
            host.remove(d.sysfs_path() + "/resource");
            for (std::size_t i = 0; i < ranges.size(); ++i) {
                auto dir = fmt::format("{}/mapping{}", d.sysfs_path(), i);
                host.add_file(dir + "/start", fmt::format("{:#x}\n", ranges[i].start));
                host.add_file(dir + "/end", fmt::format("{:#x}\n", ranges[i].end));
            }
        }
        return d;
    }

    std::map<std::string, uid_t> users;
    std::map<std::string, gid_t> groups;
};

// A record of these devices as HostState::rebuild makes it, for the JSON
// tests that need devices no host scan gives (warnings, a configured tag
// with no configuration).
TagRecord record_of(const std::vector<ProbedDevice>& devs, const Config& config, HostOs& os) {
    std::vector<std::shared_ptr<const ProbedDevice>> shared;
    for (const auto& d : devs)
        shared.push_back(std::make_shared<const ProbedDevice>(d));
    return make_record(*devs.front().tag, std::move(shared), {}, config, os);
}

// --- states ------------------------------------------------------------

TEST_F(Records, SingleDcdDeviceIsAReadyTag) {
    ScanResult r = build({dcd(0, 0, kA)}, empty);
    ASSERT_THAT(r.tags, SizeIs(1));
    const TagRecord& t = r.tags[0];
    EXPECT_EQ(t.tag, U(kA));
    EXPECT_EQ(t.state, TagState::ready);
    EXPECT_TRUE(t.usable());
    EXPECT_EQ(t.reason, "");
    EXPECT_EQ(t.source, TagSource::dcd);
    EXPECT_EQ(t.name, "");
    ASSERT_NE(t.device(), nullptr);
    EXPECT_EQ(t.device()->dev.name, "dax0.0");
    EXPECT_TRUE(t.shareable) << "DCD capacity is shareable unless configured otherwise";
    EXPECT_EQ(t.shareable_from, ShareableFrom::default_value);
    EXPECT_THAT(r.untagged, IsEmpty());
    EXPECT_THAT(r.rejected, IsEmpty());
    EXPECT_THAT(r.config_errors, IsEmpty());
}

TEST_F(Records, TwoDevicesWithOneTagAreOneConflictRecord) {
    // Given in reverse order: the record lists them by region and id.
    ScanResult r = build({dcd(1, 0, kA), dcd(0, 3, kA)}, empty);
    ASSERT_THAT(r.tags, SizeIs(1));
    const TagRecord& t = r.tags[0];
    EXPECT_EQ(t.state, TagState::conflict);
    EXPECT_FALSE(t.usable());
    EXPECT_EQ(t.device(), nullptr);
    ASSERT_THAT(t.devices, SizeIs(2));
    EXPECT_EQ(t.devices[0]->dev.name, "dax0.3");
    EXPECT_EQ(t.devices[1]->dev.name, "dax1.0");
    EXPECT_THAT(t.reason, AllOf(HasSubstr("2 devices"), HasSubstr("dax0.3"), HasSubstr("dax1.0")));
    EXPECT_THAT(r.untagged, IsEmpty());
}

TEST_F(Records, ThreeWayConflictNamesEveryDevice) {
    ScanResult r = build({dcd(2, 0, kA), dcd(0, 0, kA), dcd(0, 1, kA), dcd(3, 0, kB)}, empty);
    ASSERT_THAT(r.tags, SizeIs(2));
    const TagRecord* a = r.find(U(kA));
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->state, TagState::conflict);
    EXPECT_EQ(a->reason, "3 devices claim this tag: dax0.0, dax0.1, dax2.0");
    EXPECT_EQ(r.find(U(kB))->state, TagState::ready);
}

TEST_F(Records, ConflictOutranksEveryOtherState) {
    ScanResult r =
        build({dcd(0, 0, kA, DevMode::system_ram), dcd(1, 0, kA, DevMode::disabled)}, empty);
    ASSERT_THAT(r.tags, SizeIs(1));
    EXPECT_EQ(r.tags[0].state, TagState::conflict);
}

TEST_F(Records, SystemRamState) {
    ScanResult r = build({dcd(0, 0, kA, DevMode::system_ram)}, empty);
    ASSERT_THAT(r.tags, SizeIs(1));
    EXPECT_EQ(r.tags[0].state, TagState::system_ram);
    EXPECT_FALSE(r.tags[0].usable());
    EXPECT_THAT(r.tags[0].reason, AllOf(HasSubstr("dax0.0"), HasSubstr("system RAM")));
    EXPECT_NE(r.tags[0].device(), nullptr);
}

TEST_F(Records, DisabledState) {
    ScanResult r = build({dcd(0, 0, kA, DevMode::disabled)}, empty);
    ASSERT_THAT(r.tags, SizeIs(1));
    EXPECT_EQ(r.tags[0].state, TagState::disabled);
    EXPECT_FALSE(r.tags[0].usable());
    EXPECT_THAT(r.tags[0].reason, AllOf(HasSubstr("dax0.0"), HasSubstr("no driver bound")));
}

TEST_F(Records, NvdimmSourceIsKept) {
    ScanResult r = build({device(0, 0, U(kA), TagSource::nvdimm)}, empty);
    ASSERT_THAT(r.tags, SizeIs(1));
    EXPECT_EQ(r.tags[0].source, TagSource::nvdimm);
}

TEST_F(Records, UntaggedDevicesAreListedWithTheirFacts) {
    ProbedDevice d = device(2, 1, std::nullopt, TagSource::config, DevMode::system_ram);
    ScanResult r = build({d}, empty);
    EXPECT_THAT(r.tags, IsEmpty());
    ASSERT_THAT(r.untagged, SizeIs(1));
    EXPECT_EQ(r.untagged[0].device, "dax2.1");
    EXPECT_EQ(r.untagged[0].size, kGiB);
    EXPECT_EQ(r.untagged[0].mode, DevMode::system_ram);
    EXPECT_EQ(r.untagged[0].target_node, 3);
    EXPECT_EQ(r.untagged[0].ranges, d.dev.ranges);
}

// --- configuration match rules --------------------------------------------

TEST_F(Records, MatchRangeTagsAnUntaggedDevice) {
    Config c = config_from(section(kA, "match-range = 0x1040000000-0x107fffffff\n"));
    // Whatever an untagged device's source field says, a match makes it "config".
    ProbedDevice untagged_dcd = device(0, 0);
    untagged_dcd.source = TagSource::dcd;
    ScanResult r = build({untagged_dcd, device(1, 0)}, c);
    ASSERT_THAT(r.tags, SizeIs(1));
    EXPECT_EQ(r.tags[0].tag, U(kA));
    EXPECT_EQ(r.tags[0].source, TagSource::config);
    EXPECT_EQ(r.tags[0].state, TagState::ready);
    ASSERT_NE(r.tags[0].device(), nullptr);
    EXPECT_EQ(r.tags[0].device()->dev.name, "dax0.0");
    EXPECT_EQ(r.tags[0].device()->tag, U(kA));
    EXPECT_EQ(r.tags[0].device()->source, TagSource::config);
    ASSERT_THAT(r.untagged, SizeIs(1));
    EXPECT_EQ(r.untagged[0].device, "dax1.0");
}

TEST_F(Records, MatchRangeMustBeExact) {
    for (const char* range : {"0x1040000000-0x107ffffffe", "0x1040000001-0x107fffffff",
                              "0x1000000000-0x10ffffffff", "0x1040000000-0x1040000fff"}) {
        Config c = config_from(section(kA, std::string("match-range = ") + range + "\n"));
        ScanResult r = build({device(0, 0)}, c);
        EXPECT_THAT(r.tags, IsEmpty()) << range;
        EXPECT_THAT(r.untagged, SizeIs(1)) << range;
    }
}

TEST_F(Records, MatchRangeNeedsADeviceWithOneRange) {
    Config c = config_from(section(kA, "match-range = 0x1040000000-0x107fffffff\n"));
    ProbedDevice split = device(0, 0);
    split.dev.ranges.push_back({0x2000000000, 0x203fffffff});
    ProbedDevice none = device(0, 1);
    none.dev.ranges.clear();
    ScanResult r = build({split, none}, c);
    EXPECT_THAT(r.tags, IsEmpty());
    EXPECT_THAT(r.untagged, SizeIs(2));
}

TEST_F(Records, MatchNodeTagsAnUntaggedDevice) {
    Config c = config_from(section(kA, "match-node = 2\nname = cxl-node-2\n"));
    ScanResult r = build({device(0, 0), device(1, 0), device(2, 0)}, c); // nodes 1, 2, 3
    ASSERT_THAT(r.tags, SizeIs(1));
    EXPECT_EQ(r.tags[0].device()->dev.name, "dax1.0");
    EXPECT_EQ(r.tags[0].source, TagSource::config);
    EXPECT_EQ(r.tags[0].name, "cxl-node-2");
    EXPECT_THAT(r.untagged, SizeIs(2));
}

TEST_F(Records, RangeAndNodeMustBothMatch) {
    Config c = config_from(section(kA, "match-range = 0x1040000000-0x107fffffff\n"
                                       "match-node = 5\n"));
    ScanResult r = build({device(0, 0)}, c); // right range, node 1
    EXPECT_THAT(r.tags, IsEmpty());
    ProbedDevice on_node = device(0, 0);
    on_node.dev.target_node = 5;
    r = build({on_node}, c);
    ASSERT_THAT(r.tags, SizeIs(1));
    EXPECT_EQ(r.tags[0].tag, U(kA));
}

TEST_F(Records, SectionWithoutMatchRulesTagsNothing) {
    Config c = config_from(section(kA, "name = only-a-name\nowner = root\n"));
    ScanResult r = build({device(0, 0), device(1, 0)}, c);
    EXPECT_THAT(r.tags, IsEmpty());
    EXPECT_THAT(r.untagged, SizeIs(2));
}

TEST_F(Records, DevicesWithTheirOwnTagAreNotMatched) {
    // dax0.0 carries kB; kA's range would match it but must not re-tag it.
    Config c = config_from(section(kA, "match-range = 0x1040000000-0x107fffffff\n"));
    ScanResult r = build({dcd(0, 0, kB)}, c);
    ASSERT_THAT(r.tags, SizeIs(1));
    EXPECT_EQ(r.tags[0].tag, U(kB));
    EXPECT_EQ(r.tags[0].source, TagSource::dcd);
    EXPECT_EQ(r.find(U(kA)), nullptr);
    EXPECT_THAT(r.rejected, IsEmpty());
}

TEST_F(Records, DeviceMatchedByTwoSectionsIsRejected) {
    Config c = config_from(section(kB, "match-node = 1\n") +
                           section(kA, "match-range = 0x1040000000-0x107fffffff\n"));
    ScanResult r = build({device(0, 0), device(1, 0)}, c);
    EXPECT_EQ(r.find(U(kA)), nullptr);
    EXPECT_EQ(r.find(U(kB)), nullptr);
    EXPECT_THAT(r.tags, IsEmpty());
    ASSERT_THAT(r.rejected, SizeIs(1));
    EXPECT_EQ(r.rejected[0].device, "dax0.0");
    EXPECT_THAT(r.rejected[0].reason,
                AllOf(HasSubstr("more than one configured tag"), HasSubstr(kA), HasSubstr(kB)));
    // Not listed as untagged either: it is in exactly one place.
    ASSERT_THAT(r.untagged, SizeIs(1));
    EXPECT_EQ(r.untagged[0].device, "dax1.0");
}

TEST_F(Records, OneSectionMatchingTwoDevicesIsAConflict) {
    Config c = config_from(section(kA, "match-node = 7\n"));
    ProbedDevice x = device(0, 0);
    ProbedDevice y = device(1, 0);
    x.dev.target_node = y.dev.target_node = 7;
    ScanResult r = build({x, y}, c);
    ASSERT_THAT(r.tags, SizeIs(1));
    EXPECT_EQ(r.tags[0].state, TagState::conflict);
    EXPECT_THAT(r.tags[0].devices, SizeIs(2));
}

TEST_F(Records, ConfigMatchAndDcdTagOnTheSameUuidConflict) {
    Config c = config_from(section(kA, "match-node = 2\n"));
    ScanResult r = build({dcd(3, 0, kA), device(1, 0)}, c);
    ASSERT_THAT(r.tags, SizeIs(1));
    EXPECT_EQ(r.tags[0].state, TagState::conflict);
    ASSERT_THAT(r.tags[0].devices, SizeIs(2));
    EXPECT_EQ(r.tags[0].devices[0]->source, TagSource::config);
    EXPECT_EQ(r.tags[0].devices[1]->source, TagSource::dcd);
    // The record's source is its first device's.
    EXPECT_EQ(r.tags[0].source, TagSource::config);
}

TEST_F(Records, RejectionsAreSortedByDevice) {
    Config c = config_from(section(kA, "match-node = 1\n") + section(kB, "match-node = 1\n"));
    // dax0.0 matched twice; dax9.0 and dax0.5 with a /dev node of another
    // number than sysfs says.
    ScanResult r = build({device(0, 0), device(9, 0), device(0, 5)}, c, [](auto& host) {
        host.add_char_device("/dev/dax9.0", 252, 200);
        host.add_char_device("/dev/dax0.5", 252, 201);
    });
    ASSERT_THAT(r.rejected, SizeIs(3));
    EXPECT_EQ(r.rejected[0].device, "dax0.0");
    EXPECT_EQ(r.rejected[1].device, "dax0.5");
    EXPECT_THAT(r.rejected[1].reason, HasSubstr("sysfs says 252:5"));
    EXPECT_EQ(r.rejected[2].device, "dax9.0");
}

// --- configuration attributes -----------------------------------------------

TEST_F(Records, DefaultAccessIsRootRoot0600) {
    ScanResult r = build({dcd(0, 0, kA)}, empty);
    ASSERT_THAT(r.tags, SizeIs(1));
    const Access& a = r.tags[0].access;
    EXPECT_EQ(a.uid, 0u);
    EXPECT_EQ(a.gid, 0u);
    EXPECT_EQ(a.mode, mode_t{0600});
    EXPECT_EQ(a.owner, "root");
    EXPECT_EQ(a.group, "root");
    EXPECT_EQ(a, Access{});
}

TEST_F(Records, SectionWithoutAccessKeysKeepsTheDefault) {
    Config c = config_from(section(kA, "name = named\n"));
    ScanResult r = build({dcd(0, 0, kA)}, c);
    ASSERT_THAT(r.tags, SizeIs(1));
    EXPECT_EQ(r.tags[0].name, "named");
    EXPECT_EQ(r.tags[0].access, Access{});
    EXPECT_TRUE(r.tags[0].shareable);
    EXPECT_EQ(r.tags[0].shareable_from, ShareableFrom::default_value);
}

TEST_F(Records, ConfigAttributesApply) {
    add_user("famfs", 1001);
    add_group("famfs-users", 2002);
    Config c = config_from(section(kA, "name = pool\nshareable = yes\nowner = famfs\n"
                                       "group = famfs-users\nmode = 0640\n"));
    ScanResult r = build({dcd(0, 0, kA)}, c);
    ASSERT_THAT(r.tags, SizeIs(1));
    const TagRecord& t = r.tags[0];
    EXPECT_EQ(t.name, "pool");
    EXPECT_TRUE(t.shareable);
    EXPECT_EQ(t.shareable_from, ShareableFrom::config);
    EXPECT_EQ(t.access.uid, 1001u);
    EXPECT_EQ(t.access.gid, 2002u);
    EXPECT_EQ(t.access.mode, mode_t{0640});
    EXPECT_EQ(t.access.owner, "famfs");
    EXPECT_EQ(t.access.group, "famfs-users");
    EXPECT_EQ(t.state, TagState::ready);
}

// Issue 19: DCD capacity may be shared with other hosts, and onlining it
// hands it to the page allocator, which zeroes it. Without a word in
// tagmem.conf a DCD tag is shareable (so `online = allow` alone is not
// enough); other sources are this host's own.
TEST_F(Records, DcdTagIsShareableUnlessConfiguredNo) {
    ScanResult r = build({dcd(0, 0, kA)}, empty);
    ASSERT_THAT(r.tags, SizeIs(1));
    EXPECT_TRUE(r.tags[0].shareable);
    EXPECT_EQ(r.tags[0].shareable_from, ShareableFrom::default_value);
    r = build({dcd(0, 0, kA)}, config_from(section(kA, "online = allow\n")));
    EXPECT_TRUE(r.tags[0].shareable) << "online = allow says nothing about sharing";
    r = build({dcd(0, 0, kA)}, config_from(section(kA, "shareable = no\n")));
    EXPECT_FALSE(r.tags[0].shareable);
    EXPECT_EQ(r.tags[0].shareable_from, ShareableFrom::config);
    r = build({device(0, 0, U(kA), TagSource::nvdimm)}, empty);
    EXPECT_FALSE(r.tags[0].shareable);
    EXPECT_EQ(r.tags[0].shareable_from, ShareableFrom::default_value);
}

TEST_F(Records, ShareableNoIsStillFromConfig) {
    Config c = config_from(section(kA, "shareable = no\n"));
    ScanResult r = build({dcd(0, 0, kA)}, c);
    ASSERT_THAT(r.tags, SizeIs(1));
    EXPECT_FALSE(r.tags[0].shareable);
    EXPECT_EQ(r.tags[0].shareable_from, ShareableFrom::config);
}

TEST_F(Records, NumericOwnerAndGroup) {
    Config c = config_from(section(kA, "owner = 4242\ngroup = 4343\nmode = 0\n"));
    ScanResult r = build({dcd(0, 0, kA)}, c);
    ASSERT_THAT(r.tags, SizeIs(1));
    EXPECT_EQ(r.tags[0].access.uid, 4242u);
    EXPECT_EQ(r.tags[0].access.gid, 4343u);
    EXPECT_EQ(r.tags[0].access.owner, "4242");
    EXPECT_EQ(r.tags[0].access.mode, mode_t{0});
}

TEST_F(Records, OwnerThatVanishedFallsBackToRootNeverToEveryone) {
    Config c = config_from(section(kA, "owner = gone\ngroup = gone-too\nmode = 0660\n"));
    ScanResult r = build({dcd(0, 0, kA)}, c);
    ASSERT_THAT(r.tags, SizeIs(1));
    EXPECT_EQ(r.tags[0].access.uid, 0u);
    EXPECT_EQ(r.tags[0].access.owner, "root");
    EXPECT_EQ(r.tags[0].access.gid, 0u);
    EXPECT_EQ(r.tags[0].access.group, "root");
    EXPECT_EQ(r.tags[0].access.mode, mode_t{0660});
}

TEST_F(Records, AttributesOfAConfigMatchedTag) {
    add_user("svc", 77);
    Config c = config_from(section(kA, "match-node = 1\nname = n1\nowner = svc\n"));
    ScanResult r = build({device(0, 0)}, c);
    ASSERT_THAT(r.tags, SizeIs(1));
    EXPECT_EQ(r.tags[0].name, "n1");
    EXPECT_EQ(r.tags[0].access.uid, 77u);
}

TEST_F(Records, ConfigForAnotherTagDoesNotApply) {
    add_user("famfs", 1001);
    Config c = config_from(section(kB, "name = b\nowner = famfs\nshareable = yes\n"));
    ScanResult r = build({dcd(0, 0, kA)}, c);
    ASSERT_THAT(r.tags, SizeIs(1));
    EXPECT_EQ(r.tags[0].name, "");
    EXPECT_EQ(r.tags[0].access, Access{});
    EXPECT_TRUE(r.tags[0].shareable); // the DCD default, not kB's setting
    EXPECT_EQ(r.find(U(kB)), nullptr) << "a configured tag without memory is no record";
}

// --- ordering, lookup, errors ------------------------------------------

TEST_F(Records, TagsAreSortedAndFindable) {
    ScanResult r = build({dcd(0, 0, kC), dcd(1, 0, kA), dcd(2, 0, kD), dcd(3, 0, kB)}, empty);
    ASSERT_THAT(r.tags, SizeIs(4));
    EXPECT_EQ(r.tags[0].tag, U(kD));
    EXPECT_EQ(r.tags[1].tag, U(kA));
    EXPECT_EQ(r.tags[2].tag, U(kB));
    EXPECT_EQ(r.tags[3].tag, U(kC));
    for (const char* t : {kA, kB, kC, kD}) {
        const TagRecord* found = r.find(U(t));
        ASSERT_NE(found, nullptr) << t;
        EXPECT_EQ(found->tag, U(t));
    }
    EXPECT_EQ(r.find(r.tags[1].tag)->devices[0]->dev.name, "dax1.0");
    EXPECT_EQ(r.find(U("6f1c2d3e-0000-4000-8000-000000000009")), nullptr);
    EXPECT_EQ(r.find(U("00000000-0000-0000-0000-000000000000")), nullptr);
    EXPECT_EQ(r.find(U("ffffffff-ffff-ffff-ffff-ffffffffffff")), nullptr);
}

TEST_F(Records, FindInAnEmptyScan) {
    ScanResult r = build({}, empty);
    EXPECT_THAT(r.tags, IsEmpty());
    EXPECT_EQ(r.find(U(kA)), nullptr);
}

TEST_F(Records, ConfigErrorsAreCarriedIntoTheResult) {
    Config c =
        parse_config(section(kA, "mode = 0999\n") + section(kB, "name = fine\n"), "bad.conf");
    ASSERT_THAT(c.errors, SizeIs(1));
    ScanResult r = build({dcd(0, 0, kA), dcd(1, 0, kB)}, c);
    EXPECT_EQ(r.config_errors, c.errors);
    ASSERT_THAT(r.config_errors, SizeIs(1));
    EXPECT_THAT(r.config_errors[0], HasSubstr("bad.conf:2:"));
    // The dropped section's tag still exists (it has memory), with defaults.
    ASSERT_THAT(r.tags, SizeIs(2));
    EXPECT_EQ(r.find(U(kA))->access.mode, mode_t{0600});
    EXPECT_EQ(r.find(U(kB))->name, "fine");
}

TEST(EnumNames, AreTheStableSpellings) {
    EXPECT_STREQ(to_string(DevMode::devdax), "devdax");
    EXPECT_STREQ(to_string(DevMode::system_ram), "system-ram");
    EXPECT_STREQ(to_string(DevMode::disabled), "disabled");
    EXPECT_STREQ(to_string(TagSource::dcd), "dcd");
    EXPECT_STREQ(to_string(TagSource::nvdimm), "nvdimm");
    EXPECT_STREQ(to_string(TagSource::config), "config");
    EXPECT_STREQ(to_string(TagState::ready), "ready");
    EXPECT_STREQ(to_string(TagState::system_ram), "system-ram");
    EXPECT_STREQ(to_string(TagState::disabled), "disabled");
    EXPECT_STREQ(to_string(TagState::conflict), "conflict");
}

// --- JSON ----------------------------------------------------------------

std::set<std::string> keys(const json& j) {
    std::set<std::string> out;
    for (auto it = j.begin(); it != j.end(); ++it)
        out.insert(it.key());
    return out;
}

using Keys = std::set<std::string>;

// "Keys are only added, never renamed" (tagmem(1)): every documented key must
// be there; new ones may appear.

const Keys kTagKeys{"tag",    "name",   "source", "state", "shareable", "shareable_from",
                    "access", "device", "path",   "size",  "align",     "devices"};
const Keys kDeviceKeys{"device", "path", "major",  "minor",     "source",      "size",
                       "align",  "mode", "region", "numa_node", "target_node", "ranges"};

TEST_F(Records, JsonOfAReadyTag) {
    add_user("famfs", 1001);
    Config c = config_from(section(kA, "name = pool\nowner = famfs\nmode = 0640\n"));
    ProbedDevice d = dcd(0, 0, kA);
    d.extents = {Extent{{0, 1}, 0x1000, 0x2000, U(kA)}};
    ScanResult r = build({d}, c);
    ASSERT_THAT(r.tags, SizeIs(1));
    json j = tag_to_json(r.tags[0], true);

    EXPECT_THAT(keys(j), IsSupersetOf(kTagKeys)) << j.dump(2);
    EXPECT_FALSE(j.contains("reason"));
    EXPECT_EQ(j["tag"], kA);
    EXPECT_EQ(j["name"], "pool");
    EXPECT_EQ(j["source"], "dcd");
    EXPECT_EQ(j["state"], "ready");
    EXPECT_EQ(j["shareable"], true);
    EXPECT_EQ(j["shareable_from"], "default");
    EXPECT_EQ(j["device"], "dax0.0");
    EXPECT_EQ(j["path"], "/dev/dax0.0");
    EXPECT_EQ(j["size"], kGiB);
    EXPECT_EQ(j["align"], 2u << 20);
    EXPECT_THAT(keys(j["access"]), IsSupersetOf(Keys{"owner", "group", "uid", "gid", "mode"}));
    EXPECT_EQ(j["access"]["owner"], "famfs");
    EXPECT_EQ(j["access"]["group"], "root");
    EXPECT_EQ(j["access"]["uid"], 1001);
    EXPECT_EQ(j["access"]["gid"], 0);
    EXPECT_EQ(j["access"]["mode"], "0640");

    ASSERT_TRUE(j["devices"].is_array());
    ASSERT_EQ(j["devices"].size(), 1u);
    const json& dj = j["devices"][0];
    Keys want = kDeviceKeys;
    want.insert("extents");
    EXPECT_THAT(keys(dj), IsSupersetOf(want)) << dj.dump(2);
    for (const char* absent : {"namespace", "infoblock_uuid", "performance", "warnings"})
        EXPECT_FALSE(dj.contains(absent)) << absent;
    EXPECT_EQ(dj["device"], "dax0.0");
    EXPECT_EQ(dj["path"], "/dev/dax0.0");
    EXPECT_EQ(dj["major"], 252);
    EXPECT_EQ(dj["minor"], 0);
    EXPECT_EQ(dj["source"], "dcd");
    EXPECT_EQ(dj["mode"], "devdax");
    EXPECT_EQ(dj["region"], 0);
    EXPECT_EQ(dj["numa_node"], 0);
    EXPECT_EQ(dj["target_node"], 1);
    ASSERT_EQ(dj["ranges"].size(), 1u);
    EXPECT_THAT(keys(dj["ranges"][0]), IsSupersetOf(Keys{"start", "end", "size"}));
    EXPECT_EQ(dj["ranges"][0]["start"], kBase);
    EXPECT_EQ(dj["ranges"][0]["end"], kBase + kGiB - 1);
    EXPECT_EQ(dj["ranges"][0]["size"], kGiB);
    ASSERT_EQ(dj["extents"].size(), 1u);
    EXPECT_EQ(dj["extents"][0],
              (json{{"extent", "extent0.1"}, {"offset", 0x1000}, {"length", 0x2000}}));
}

TEST_F(Records, JsonModeIsFourOctalDigits) {
    for (const auto& [mode, text] : std::vector<std::pair<mode_t, std::string>>{
             {0600, "0600"}, {0, "0000"}, {0777, "0777"}, {044, "0044"}}) {
        TagRecord t;
        t.tag = U(kA);
        t.access.mode = mode;
        t.devices = {std::make_shared<const ProbedDevice>(dcd(0, 0, kA))};
        EXPECT_EQ(tag_to_json(t, true)["access"]["mode"], text);
    }
}

TEST_F(Records, JsonOfAConflictHasNoTopLevelDevice) {
    ScanResult r = build({dcd(0, 0, kA), dcd(1, 0, kA)}, empty);
    ASSERT_THAT(r.tags, SizeIs(1));
    json j = tag_to_json(r.tags[0], true);
    Keys want = kTagKeys;
    for (const char* k : {"device", "path", "size", "align"}) {
        want.erase(k);
        EXPECT_FALSE(j.contains(k)) << k << " in a conflict:\n" << j.dump(2);
    }
    want.insert("reason");
    EXPECT_THAT(keys(j), IsSupersetOf(want)) << j.dump(2);
    EXPECT_EQ(j["state"], "conflict");
    EXPECT_THAT(j["reason"].get<std::string>(), AllOf(HasSubstr("dax0.0"), HasSubstr("dax1.0")));
    ASSERT_TRUE(j["devices"].is_array());
    ASSERT_EQ(j["devices"].size(), 2u);
    EXPECT_EQ(j["devices"][0]["device"], "dax0.0");
    EXPECT_EQ(j["devices"][1]["device"], "dax1.0");
}

TEST_F(Records, JsonReasonOnlyWhenNotReady) {
    ScanResult r = build({dcd(0, 0, kA, DevMode::system_ram), dcd(1, 0, kB)}, empty);
    json ram = tag_to_json(*r.find(U(kA)), true);
    json ok = tag_to_json(*r.find(U(kB)), true);
    EXPECT_EQ(ram["state"], "system-ram");
    EXPECT_TRUE(ram.contains("reason"));
    EXPECT_EQ(ram["devices"][0]["mode"], "system-ram");
    EXPECT_FALSE(ok.contains("reason"));
}

TEST_F(Records, JsonExtentsOnlyForDcdDevices) {
    ProbedDevice nv = device(0, 0, U(kA), TagSource::nvdimm);
    nv.extents = {Extent{{0, 0}, 0, 0x1000, U(kA)}}; // must not be shown
    nv.notes = Shared(DeviceNotes{U(kC), "namespace0.0", {}, {}, {}, {}});
    ProbedDevice cfg = device(1, 0, U(kB), TagSource::config);
    ProbedDevice empty_dcd = dcd(2, 0, kC);
    json jn = tag_to_json(record_of({nv}, empty, os), true)["devices"][0];
    Keys want = kDeviceKeys;
    want.insert({"namespace", "infoblock_uuid"});
    EXPECT_THAT(keys(jn), IsSupersetOf(want)) << jn.dump(2);
    EXPECT_FALSE(jn.contains("extents")) << "extents shown for an nvdimm device";
    EXPECT_EQ(jn["source"], "nvdimm");
    EXPECT_EQ(jn["namespace"], "namespace0.0");
    EXPECT_EQ(jn["infoblock_uuid"], kC);

    json jc = tag_to_json(record_of({cfg}, empty, os), true)["devices"][0];
    EXPECT_THAT(keys(jc), IsSupersetOf(kDeviceKeys)) << jc.dump(2);
    for (const char* absent : {"extents", "namespace", "infoblock_uuid"})
        EXPECT_FALSE(jc.contains(absent)) << absent;
    EXPECT_EQ(jc["source"], "config");

    json jd = tag_to_json(record_of({empty_dcd}, empty, os), true)["devices"][0];
    ASSERT_TRUE(jd.contains("extents"));
    EXPECT_TRUE(jd["extents"].is_array());
    EXPECT_TRUE(jd["extents"].empty());
}

TEST_F(Records, JsonPerformanceAndWarningsOnlyWhenPresent) {
    ProbedDevice d = dcd(0, 0, kA);
    d.performance = Shared(Performance{250, std::nullopt, std::nullopt, 9000});
    d.notes = Shared(DeviceNotes{std::nullopt, "", {"extents unreadable: x"}, {}, {}, {}});
    json with = tag_to_json(record_of({d}, empty, os), true)["devices"][0];
    ASSERT_TRUE(with.contains("performance"));
    EXPECT_EQ(with["performance"],
              (json{{"read_latency_ns", 250}, {"write_bandwidth_mbps", 9000}}));
    EXPECT_EQ(with["warnings"], (json{"extents unreadable: x"}));
    json without = tag_to_json(record_of({dcd(1, 0, kB)}, empty, os), true)["devices"][0];
    EXPECT_FALSE(without.contains("performance"));
    EXPECT_FALSE(without.contains("warnings"));
    EXPECT_FALSE(without.contains("namespace"));
    EXPECT_FALSE(without.contains("infoblock_uuid"));
}

TEST_F(Records, JsonOfAWholeScan) {
    Config c = parse_config(section(kA, "mode = 0999\n"), "x.conf");
    ProbedDevice untagged = device(5, 0);
    ScanResult r = build({dcd(0, 0, kB), dcd(1, 0, kA), untagged, device(9, 9)}, c,
                         [](auto& host) { host.remove("/dev/dax9.9"); });
    json j = scan_to_json(r, true);
    EXPECT_THAT(keys(j), IsSupersetOf(Keys{"tags", "untagged", "rejected", "config_errors"}));
    ASSERT_EQ(j["tags"].size(), 2u);
    EXPECT_EQ(j["tags"][0]["tag"], kA); // sorted
    EXPECT_EQ(j["tags"][1]["tag"], kB);
    EXPECT_EQ(j["tags"][0], tag_to_json(r.tags[0], true));
    ASSERT_EQ(j["untagged"].size(), 1u);
    EXPECT_THAT(keys(j["untagged"][0]),
                IsSupersetOf(Keys{"device", "size", "mode", "target_node", "ranges"}));
    EXPECT_EQ(j["untagged"][0]["device"], "dax5.0");
    EXPECT_EQ(j["untagged"][0]["mode"], "devdax");
    EXPECT_EQ(j["untagged"][0]["target_node"], 6);
    EXPECT_EQ(j["untagged"][0]["ranges"][0]["size"], kGiB);
    ASSERT_EQ(j["rejected"].size(), 1u);
    EXPECT_EQ(j["rejected"][0],
              (json{{"device", "dax9.9"}, {"reason", "no device node /dev/dax9.9"}}));
    ASSERT_EQ(j["config_errors"].size(), 1u);
    EXPECT_THAT(j["config_errors"][0].get<std::string>(), HasSubstr("x.conf:2:"));
}

// Physical addresses are root-only in the kernel (dax mappingN/start, end and
// resource are 0400); `metadata` is world-readable and is the unprivileged form.
TEST_F(Records, UnprivilegedJsonHasNoPhysicalAddress) {
    ProbedDevice nv = dcd(2, 0, kC);
    nv.dev.ranges.push_back({kBase + 7 * kGiB, kBase + 8 * kGiB - 1}); // two ranges
    ScanResult r = build({dcd(0, 0, kB), nv, device(5, 0)}, empty);
    json full = scan_to_json(r, true);
    json world = scan_to_json(r, false);
    std::string text = world.dump();
    for (std::uint64_t addr : {kBase, kBase + 2 * kGiB, kBase + 5 * kGiB, kBase + 8 * kGiB - 1}) {
        EXPECT_EQ(text.find(std::to_string(addr)), std::string::npos) << addr << "\n" << text;
        EXPECT_EQ(text.find(fmt::format("{:x}", addr)), std::string::npos) << addr;
    }
    // Nothing else is lost: the unprivileged form is the full one without ranges.
    for (auto& t : full["tags"])
        for (auto& d : t["devices"]) {
            EXPECT_TRUE(d.contains("ranges"));
            d.erase("ranges");
        }
    for (auto& u : full["untagged"]) {
        EXPECT_TRUE(u.contains("ranges"));
        u.erase("ranges");
    }
    EXPECT_EQ(world, full);
    EXPECT_EQ(tag_to_json(r.tags[0], false), world["tags"][0]);
    EXPECT_EQ(metadata_text(r.tags[0]), tag_to_json(r.tags[0], false).dump(2) + "\n");
}

TEST_F(Records, JsonOfAnEmptyScanHasEmptyArrays) {
    json j = scan_to_json(build({}, empty), true);
    for (const char* k : {"tags", "untagged", "rejected", "config_errors"}) {
        ASSERT_TRUE(j.contains(k)) << k;
        EXPECT_TRUE(j[k].is_array()) << k;
        EXPECT_TRUE(j[k].empty()) << k;
    }
}

} // namespace
} // namespace tagmem
