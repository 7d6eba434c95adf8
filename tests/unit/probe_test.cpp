// SPDX-License-Identifier: Apache-2.0
#include "probe.hpp"

#include "fake_host_os.hpp"
#include "host_os.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace tagmem {
namespace {

using fake::DaxSpec;
using fake::FakeHostOs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

constexpr const char* kTag = "6f1c2d3e-0000-4000-8000-000000000001";
constexpr const char* kOther = "6f1c2d3e-0000-4000-8000-000000000002";
constexpr const char* kInfo = "a0a0a0a0-1111-4222-8333-444444444444";
constexpr const char* kNil = "00000000-0000-0000-0000-000000000000";

Uuid U(const char* text) {
    auto u = Uuid::parse(text);
    EXPECT_TRUE(u.ok()) << text;
    return u.value_or(Uuid());
}

// What HostState::load_device does with one device before tags are
// assigned: read_device, then complete_probe with the scan's cache.
Result<ProbedDevice> probe_device(const DaxDevice& dev, HostOs& os, ScanCache& cache) {
    auto reading = read_device(dev, os, cache.dax_major());
    if (!reading)
        return reading.error();
    return complete_probe(std::move(*reading), cache);
}

// --- the fake itself: the other tests are only as good as it is ---------

TEST(FakeHostOs, RelativeLinkText) {
    EXPECT_EQ(
        fake::relative_link("/sys/bus/dax/devices/dax0.0", "/sys/devices/platform/hmem.0/dax0.0"),
        "../../../devices/platform/hmem.0/dax0.0");
    EXPECT_EQ(fake::relative_link("/sys/devices/x/dax0.0/subsystem", "/sys/bus/dax"),
              "../../../bus/dax");
    EXPECT_EQ(fake::normalize_path("/a/./b/../c//d/"), "/a/c/d");
}

TEST(FakeHostOs, DeviceHelperBuildsAConsistentDevice) {
    FakeHostOs os;
    DaxDevice d = os.add_hmem_device(DaxSpec{}.at(3, 0).minor_number(7));
    EXPECT_EQ(d.name, "dax3.0");
    EXPECT_EQ(d.sysfs_path(), "/sys/devices/platform/hmem.3/dax3.0");
    EXPECT_EQ(d.region_path(), "/sys/devices/platform/hmem.3");
    EXPECT_EQ(d.devno, (DevNumber{fake::kDaxMajor, 7}));
    // Links are relative and resolve inside the tree.
    EXPECT_EQ(os.real_path("/sys/bus/dax/devices/dax3.0").value_or(""), d.sysfs_path());
    EXPECT_EQ(os.real_path("/sys/dev/char/252:7").value_or(""), d.sysfs_path());
    EXPECT_EQ(os.real_path("/sys/dev/char/252:7/subsystem").value_or(""), "/sys/bus/dax");
    EXPECT_EQ(os.real_path(d.sysfs_path() + "/driver").value_or(""),
              "/sys/bus/dax/drivers/device_dax");
    EXPECT_EQ(os.read_file("/sys/dev/char/252:7/dev").value_or(""), "252:7\n");
    EXPECT_EQ(os.read_file(d.sysfs_path() + "/resource").value_or(""), "0x1040000000\n");
    auto node = os.lstat_node("/dev/dax3.0");
    ASSERT_TRUE(node.ok());
    EXPECT_EQ(node->type, NodeType::char_device);
    EXPECT_EQ(node->rdev, d.devno);
    EXPECT_EQ(os.dax_char_major().value_or(std::nullopt), fake::kDaxMajor);
}

TEST(FakeHostOs, SymlinksAreNotFollowedByLstatOrReadFile) {
    FakeHostOs os;
    DaxDevice d = os.add_hmem_device();
    auto link = os.lstat_node(d.sysfs_path() + "/subsystem");
    ASSERT_TRUE(link.ok());
    EXPECT_EQ(link->type, NodeType::symlink);
    os.add_symlink("/etc/link", d.sysfs_path() + "/size");
    auto r = os.read_file("/etc/link"); // O_NOFOLLOW
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ELOOP);
    EXPECT_TRUE(os.exists("/etc/link"));
}

TEST(FakeHostOs, MissingThingsAndInjectedFailures) {
    FakeHostOs os;
    os.add_file("/a/b", "x");
    EXPECT_EQ(os.read_file("/a/c").error().code, ENOENT);
    EXPECT_EQ(os.read_file("/a/b/c").error().code, ENOTDIR);
    EXPECT_EQ(os.list_dir("/nope").error().code, ENOENT);
    EXPECT_EQ(os.real_path("/a/nope").error().code, ENOENT);
    EXPECT_FALSE(os.exists("/a/c"));
    EXPECT_THAT(os.list_dir("/a").value_or(std::vector<std::string>{}), ElementsAre("b"));
    os.fail("/a/b", EIO);
    EXPECT_EQ(os.read_file("/a/b").error().code, EIO);
    EXPECT_FALSE(os.exists("/a/b"));
    os.add_symlink("/loop", "/loop");
    EXPECT_EQ(os.real_path("/loop").error().code, ELOOP);
    os.remove("/a");
    EXPECT_FALSE(os.exists("/a"));
    EXPECT_EQ(os.user_id("root").value_or(99), 0u);
    EXPECT_EQ(os.user_id("1234").value_or(99), 1234u);
    EXPECT_FALSE(os.group_id("nobody-here").ok());
}

// --- probe_device: accepted devices --------------------------------------

class Probe : public ::testing::Test {
  protected:
    FakeHostOs os;

    ProbedDevice probe_ok(const DaxDevice& d) {
        ScanCache cache(os);
        auto p = probe_device(d, os, cache);
        EXPECT_TRUE(p.ok()) << p.error().message;
        return p.ok() ? std::move(p).value() : ProbedDevice{};
    }

    Error probe_fails(const DaxDevice& d) {
        ScanCache cache(os);
        auto p = probe_device(d, os, cache);
        EXPECT_FALSE(p.ok()) << d.name << " was accepted";
        return p.ok() ? Error{0, "accepted"} : p.error();
    }
};

TEST_F(Probe, DcdTaggedDeviceGetsOnlyItsExtentsSortedByOffset) {
    DaxDevice d = os.add_dcd_device(DaxSpec{}.at(2, 1).nodes(1, 3), kTag);
    os.add_dcd_extent(d, 4, 0x40000000, 0x10000000, kTag);
    os.add_dcd_extent(d, 0, 0x80000000, 0x20000000, kTag);
    os.add_dcd_extent(d, 1, 0x00000000, 0x10000000, kOther);       // another tag's
    os.add_dcd_extent(d, 2, 0x10000000, 0x10000000, std::nullopt); // untagged
    os.add_dcd_extent(d, 3, 0x20000000, 0x10000000, "0");          // "no tag"
    os.add_dcd_extent(d, 5, 0x30000000, 0x08000000,
                      "6F1C2D3E-0000-4000-8000-000000000001"); // same tag, upper case

    ProbedDevice p = probe_ok(d);
    EXPECT_EQ(p.dev.name, "dax2.1");
    ASSERT_TRUE(p.tag.has_value());
    EXPECT_EQ(*p.tag, U(kTag));
    EXPECT_EQ(p.source, TagSource::dcd);
    EXPECT_EQ(p.numa_node, 3);
    EXPECT_THAT(p.notes->warnings, IsEmpty());
    EXPECT_TRUE(p.notes->namespace_name.empty());
    EXPECT_FALSE(p.notes->infoblock_uuid.has_value());
    ASSERT_THAT(p.extents, SizeIs(3));
    EXPECT_EQ(p.extents[0], (Extent{{2, 5}, 0x30000000, 0x08000000, U(kTag)}));
    EXPECT_EQ(p.extents[1], (Extent{{2, 4}, 0x40000000, 0x10000000, U(kTag)}));
    EXPECT_EQ(p.extents[2], (Extent{{2, 0}, 0x80000000, 0x20000000, U(kTag)}));
}

TEST_F(Probe, DcdUpperCaseTagIsCanonical) {
    DaxDevice d = os.add_dcd_device({}, "6F1C2D3E-0000-4000-8000-000000000001");
    os.add_dcd_extent(d, 0, 0, 0x1000, kTag);
    ProbedDevice p = probe_ok(d);
    ASSERT_TRUE(p.tag.has_value());
    EXPECT_EQ(p.tag->str(), kTag);
    EXPECT_THAT(p.extents, SizeIs(1));
}

TEST_F(Probe, DcdTaggedDeviceWithoutExtentsIsFine) {
    DaxDevice d = os.add_dcd_device({}, kTag);
    ProbedDevice p = probe_ok(d);
    EXPECT_EQ(p.tag, U(kTag));
    EXPECT_EQ(p.source, TagSource::dcd);
    EXPECT_THAT(p.extents, IsEmpty());
    EXPECT_THAT(p.notes->warnings, IsEmpty());
}

TEST_F(Probe, DcdAllZeroUuidIsUntagged) {
    DaxDevice d = os.add_dcd_device({}, kNil);
    os.add_dcd_extent(d, 0, 0, 0x1000, std::nullopt);
    os.add_dcd_extent(d, 1, 0x1000, 0x1000, kNil);
    ProbedDevice p = probe_ok(d);
    EXPECT_FALSE(p.tag.has_value());
    EXPECT_NE(p.source, TagSource::dcd);
    EXPECT_THAT(p.extents, IsEmpty());
    EXPECT_THAT(p.notes->warnings, IsEmpty());
}

TEST_F(Probe, DcdZeroOfOlderSeriesIsUntagged) {
    DaxDevice d = os.add_dcd_device({}, "0");
    ProbedDevice p = probe_ok(d);
    EXPECT_FALSE(p.tag.has_value());
    EXPECT_THAT(p.extents, IsEmpty());
}

TEST_F(Probe, DcdExtentsUnreadableIsAWarningNotARejection) {
    DaxDevice d = os.add_dcd_device({}, kTag);
    os.add_dcd_extent(d, 0, 0, 0x1000, kTag);
    os.fail(d.region_path(), EACCES);
    ProbedDevice p = probe_ok(d);
    EXPECT_EQ(p.tag, U(kTag));
    EXPECT_EQ(p.source, TagSource::dcd);
    EXPECT_THAT(p.extents, IsEmpty());
    ASSERT_THAT(p.notes->warnings, SizeIs(1));
    EXPECT_THAT(p.notes->warnings[0], HasSubstr("extents unreadable"));
}

TEST_F(Probe, DcdOneBrokenExtentIsAWarning) {
    struct Breakage {
        const char* what;
        std::string file;
        std::string content; // empty: remove the file
    };
    for (const Breakage& b :
         {Breakage{"malformed extent uuid", "uuid", "not-a-uuid\n"},
          Breakage{"truncated extent uuid", "uuid", "6f1c2d3e-0000\n"},
          Breakage{"missing offset", "offset", ""}, Breakage{"missing length", "length", ""},
          Breakage{"junk offset", "offset", "0xzz\n"}, Breakage{"empty length", "length", "\n"}}) {
        FakeHostOs host;
        DaxDevice d = host.add_dcd_device({}, kTag);
        host.add_dcd_extent(d, 0, 0, 0x1000, kTag);
        host.add_dcd_extent(d, 1, 0x1000, 0x1000, kTag);
        std::string path = d.region_path() + "/extent0.1/" + b.file;
        if (b.content.empty())
            host.remove(path);
        else
            host.add_file(path, b.content);
        ScanCache cache(host);
        auto p = probe_device(d, host, cache);
        ASSERT_TRUE(p.ok()) << b.what << ": " << p.error().message;
        EXPECT_EQ(p->tag, U(kTag)) << b.what;
        ASSERT_THAT(p->notes->warnings, SizeIs(1)) << b.what;
        EXPECT_THAT(p->notes->warnings[0],
                    AllOf(HasSubstr("extents unreadable"), HasSubstr("extent0.1/" + b.file)))
            << b.what;
    }
}

TEST_F(Probe, ScanCacheReadsEachRegionOnceForAllItsDevices) {
    DaxDevice a = os.add_dcd_device(DaxSpec{}.at(4, 0), kTag);
    DaxDevice b = os.add_dcd_device(DaxSpec{}.at(4, 1), kOther);
    DaxDevice other_region = os.add_dcd_device(DaxSpec{}.at(5, 0), kTag);
    ASSERT_EQ(a.region_path(), b.region_path());
    os.add_dcd_extent(a, 0, 0x2000, 0x1000, kOther);
    os.add_dcd_extent(a, 1, 0x1000, 0x1000, kTag);
    os.add_dcd_extent(a, 2, 0x3000, 0x1000, kOther);
    os.add_dcd_extent(other_region, 0, 0x0, 0x4000, kTag);

    ScanCache cache(os);
    auto pa = probe_device(a, os, cache);
    auto pb = probe_device(b, os, cache);
    auto pc = probe_device(other_region, os, cache);
    ASSERT_TRUE(pa.ok() && pb.ok() && pc.ok());
    EXPECT_EQ(os.list_count(a.region_path()), 1);
    EXPECT_EQ(os.list_count(other_region.region_path()), 1);
    ASSERT_THAT(pa->extents, SizeIs(1));
    EXPECT_EQ(pa->extents[0].name, "extent4.1");
    ASSERT_THAT(pb->extents, SizeIs(2));
    EXPECT_EQ(pb->extents[0].name, "extent4.0");
    EXPECT_EQ(pb->extents[1].name, "extent4.2");
    ASSERT_THAT(pc->extents, SizeIs(1));
    EXPECT_EQ(pc->extents[0], (Extent{{5, 0}, 0x0, 0x4000, U(kTag)}));
}

TEST_F(Probe, ScanCacheKeepsTheErrorForEveryDeviceOfTheRegion) {
    DaxDevice a = os.add_dcd_device(DaxSpec{}.at(4, 0), kTag);
    DaxDevice b = os.add_dcd_device(DaxSpec{}.at(4, 1), kOther);
    os.fail(a.region_path(), EIO);
    ScanCache cache(os);
    auto pa = probe_device(a, os, cache);
    auto pb = probe_device(b, os, cache);
    ASSERT_TRUE(pa.ok() && pb.ok());
    EXPECT_EQ(os.list_count(a.region_path()), 1);
    EXPECT_THAT(pa->notes->warnings, ElementsAre(HasSubstr("extents unreadable")));
    EXPECT_THAT(pb->notes->warnings, ElementsAre(HasSubstr("extents unreadable")));
}

TEST_F(Probe, ScanCacheReturnsTheRegionsExtents) {
    DaxDevice d = os.add_dcd_device(DaxSpec{}.at(3, 0), kTag);
    os.add_dcd_extent(d, 1, 0x2000, 0x1000, kTag);
    os.add_dcd_extent(d, 0, 0x1000, 0x1000, std::nullopt);
    ScanCache cache(os);
    const auto& first = cache.extents(d.region_path());
    ASSERT_TRUE(first.ok());
    EXPECT_THAT(*first, SizeIs(2));
    // Same object the second time, not a re-read.
    EXPECT_EQ(&cache.extents(d.region_path()), &first);
    EXPECT_EQ(os.list_count(d.region_path()), 1);
    const auto& missing = cache.extents("/sys/no/such/region");
    EXPECT_FALSE(missing.ok());
    // A fresh cache (the next scan) sees what changed since.
    os.add_dcd_extent(d, 2, 0x3000, 0x1000, kTag);
    ScanCache next(os);
    ASSERT_TRUE(next.extents(d.region_path()).ok());
    EXPECT_THAT(*next.extents(d.region_path()), SizeIs(3));
}

TEST_F(Probe, HmemDeviceHasNoTag) {
    DaxDevice d = os.add_hmem_device(DaxSpec{}.at(1, 0).nodes(4, 0));
    ProbedDevice p = probe_ok(d);
    EXPECT_FALSE(p.tag.has_value());
    EXPECT_THAT(p.extents, IsEmpty());
    EXPECT_TRUE(p.notes->namespace_name.empty());
    EXPECT_FALSE(p.notes->infoblock_uuid.has_value());
    EXPECT_THAT(p.notes->warnings, IsEmpty());
    EXPECT_EQ(p.numa_node, 0);
    EXPECT_EQ(p.dev.name, d.name);
    EXPECT_EQ(p.dev.ranges, d.ranges);
    EXPECT_TRUE(p.performance->empty());
}

TEST_F(Probe, SizeIsReadFromSysfs) {
    DaxDevice d = os.add_hmem_device(DaxSpec{}.range(0x2000000000, 4ull << 30));
    d.size = 0; // what libdaxctl reports for a size it could not parse
    ProbedDevice p = probe_ok(d);
    EXPECT_EQ(p.dev.size, 4ull << 30);
}

TEST_F(Probe, UnreadableSizeRejects) {
    for (const char* bad : {"", "\n", "junk\n", "-1\n", "0x\n", "12 34\n"}) {
        FakeHostOs host;
        DaxDevice d = host.add_hmem_device();
        if (*bad)
            host.add_file(d.sysfs_path() + "/size", bad);
        else
            host.remove(d.sysfs_path() + "/size");
        ScanCache cache(host);
        auto p = probe_device(d, host, cache);
        ASSERT_FALSE(p.ok()) << "size '" << bad << "' accepted";
        EXPECT_THAT(p.error().message,
                    AllOf(HasSubstr("size unreadable"), HasSubstr(d.sysfs_path() + "/size")));
    }
}

TEST_F(Probe, MissingOrBadNumaNodeIsMinusOne) {
    DaxDevice d = os.add_hmem_device(DaxSpec{}.nodes(1, 5));
    os.add_file(d.sysfs_path() + "/numa_node", "five\n");
    EXPECT_EQ(probe_ok(d).numa_node, -1);
    os.remove(d.sysfs_path() + "/numa_node");
    EXPECT_EQ(probe_ok(d).numa_node, -1);
    os.add_file(d.sysfs_path() + "/numa_node", "-1\n");
    EXPECT_EQ(probe_ok(d).numa_node, -1);
}

TEST_F(Probe, HmatPerformanceOfTheTargetNode) {
    DaxDevice d = os.add_hmem_device(DaxSpec{}.nodes(2, 0));
    os.set_node_performance(2, Performance{250, 300, 20000, 15000});
    // The CPU node's numbers must not be picked up instead.
    os.set_node_performance(0, Performance{80, 80, 90000, 90000});
    ProbedDevice p = probe_ok(d);
    EXPECT_EQ(*p.performance, (Performance{250, 300, 20000, 15000}));
    EXPECT_FALSE(p.performance->empty());
}

TEST_F(Probe, DevicesOfOneNodeShareOnePerformanceCopy) {
    // Why: at 100,000 devices a copy each cost 64 bytes per tag; sharing must
    // not change equality (a rescan builds new copies of the same numbers).
    DaxDevice a = os.add_hmem_device(DaxSpec{}.at(0, 0).nodes(2, 0));
    DaxDevice b = os.add_hmem_device(DaxSpec{}.at(1, 0).nodes(2, 0));
    os.set_node_performance(2, Performance{250, 300, 20000, 15000});
    ScanCache cache(os);
    ProbedDevice pa = probe_device(a, os, cache).value();
    ProbedDevice pb = probe_device(b, os, cache).value();
    EXPECT_EQ(&*pa.performance, &*pb.performance);
    ProbedDevice again = probe_ok(a); // another cache: another copy, equal content
    EXPECT_NE(&*again.performance, &*pa.performance);
    EXPECT_EQ(again.performance, pa.performance);
    os.set_node_performance(2, Performance{251, 300, 20000, 15000});
    EXPECT_NE(probe_ok(a).performance, pa.performance);
}

TEST_F(Probe, DcdDeviceReadsPerformanceToo) {
    DaxDevice d = os.add_dcd_device(DaxSpec{}.nodes(3, 0), kTag);
    os.set_node_performance(3, Performance{400, std::nullopt, std::nullopt, std::nullopt});
    ProbedDevice p = probe_ok(d);
    EXPECT_EQ(p.performance->read_latency_ns, 400u);
    EXPECT_FALSE(p.performance->write_latency_ns.has_value());
}

TEST(ReadNodePerformance, PartialAndMalformedValuesAreLeftOut) {
    FakeHostOs os;
    os.set_node_performance(1, Performance{100, std::nullopt, 5000, std::nullopt});
    os.add_file("/sys/devices/system/node/node1/access0/initiators/write_latency", "fast\n");
    os.add_file("/sys/devices/system/node/node1/access0/initiators/write_bandwidth", "\n");
    Performance perf = read_node_performance(1, os).value();
    EXPECT_EQ(perf.read_latency_ns, 100u);
    EXPECT_FALSE(perf.write_latency_ns.has_value());
    EXPECT_EQ(perf.read_bandwidth_mbps, 5000u);
    EXPECT_FALSE(perf.write_bandwidth_mbps.has_value());
}

TEST(ReadNodePerformance, NoNodeOrNoDataIsEmpty) {
    FakeHostOs os;
    os.set_node_performance(0, Performance{1, std::nullopt, std::nullopt, std::nullopt});
    EXPECT_TRUE(read_node_performance(-1, os)->empty());
    EXPECT_TRUE(read_node_performance(7, os)->empty());
    EXPECT_FALSE(read_node_performance(0, os)->empty());
}

// --- NVDIMM ------------------------------------------------------------

class ProbeNvdimm : public Probe {
  protected:
    // The namespace and info-block uuid files of d, for tests that rewrite them.
    static std::string namespace_uuid_path(const DaxDevice& d) {
        auto slash = d.region_path().rfind('/');
        return d.region_path().substr(0, slash) + "/namespace" + std::to_string(d.region_id) +
               ".0/uuid";
    }
    static std::string infoblock_uuid_path(const DaxDevice& d) { return d.region_path() + "/uuid"; }
};

// The kernel prints "%pUb\n": uuid files end in a newline.
TEST_F(ProbeNvdimm, NamespaceTagAndInfoblockAsTheKernelPrintsThem) {
    DaxDevice d = os.add_nvdimm_device(DaxSpec{}.at(1, 0).nodes(1, 1), kTag, kInfo);
    ASSERT_EQ(os.read_file(namespace_uuid_path(d)).value_or(""), std::string(kTag) + "\n");
    ASSERT_EQ(os.read_file(infoblock_uuid_path(d)).value_or(""), std::string(kInfo) + "\n");
    ProbedDevice p = probe_ok(d);
    EXPECT_EQ(p.tag, U(kTag));
    EXPECT_EQ(p.source, TagSource::nvdimm);
    EXPECT_EQ(p.notes->namespace_name, "namespace1.0");
    EXPECT_EQ(p.notes->infoblock_uuid, U(kInfo));
    EXPECT_EQ(p.numa_node, 1);
    EXPECT_THAT(p.extents, IsEmpty());
    EXPECT_THAT(p.notes->warnings, IsEmpty());
}

// A DCD kernel (series v11) gives every dax device a `uuid` attribute,
// the null UUID unless tagged DC capacity backs it: the namespace's tag
// still counts, and the device's region has no extents to read.
TEST_F(ProbeNvdimm, NullDeviceUuidOfADcdKernelKeepsTheNamespaceTag) {
    DaxDevice d = os.add_nvdimm_device({}, kTag, kInfo);
    os.add_file(d.sysfs_path() + "/uuid", std::string(kNil) + "\n");
    ProbedDevice p = probe_ok(d);
    EXPECT_EQ(p.tag, U(kTag));
    EXPECT_EQ(p.source, TagSource::nvdimm);
    EXPECT_THAT(p.extents, IsEmpty());
    EXPECT_EQ(os.list_count(d.region_path()), 0); // no extent listing outside DC regions
}

TEST(ProbeHmem, NullDeviceUuidIsNoTag) {
    FakeHostOs os;
    DaxDevice d = os.add_hmem_device({});
    os.add_file(d.sysfs_path() + "/uuid", "00000000-0000-0000-0000-000000000000\n");
    ScanCache cache(os);
    auto p = probe_device(d, os, cache);
    ASSERT_TRUE(p.ok()) << p.error().message;
    EXPECT_FALSE(p->tag.has_value());
    EXPECT_FALSE(is_dc_region_path(d.region_path()));
}

TEST(ProbeDcd, OnlyDaxRegionNDirectoriesAreDcRegions) {
    EXPECT_TRUE(is_dc_region_path("/sys/devices/platform/ACPI0017:00/root0/decoder0.0/region0/"
                                  "dax_region0"));
    EXPECT_TRUE(is_dc_region_path("/x/dax_region12"));
    for (const char* no : {"/x/dax_region", "/x/dax_region1a", "/sys/devices/platform/hmem.0",
                           "/x/region0/dax0.1", "/x/dax_regionx", ""})
        EXPECT_FALSE(is_dc_region_path(no)) << no;
}

TEST_F(ProbeNvdimm, UuidFilesWithoutNewlineToo) {
    DaxDevice d = os.add_nvdimm_device({}, kTag, kInfo);
    os.add_file(namespace_uuid_path(d), kTag);
    os.add_file(infoblock_uuid_path(d), kInfo);
    ProbedDevice p = probe_ok(d);
    EXPECT_EQ(p.tag, U(kTag));
    EXPECT_EQ(p.notes->infoblock_uuid, U(kInfo));
}

TEST_F(ProbeNvdimm, UpperCaseNamespaceUuidIsCanonical) {
    DaxDevice d = os.add_nvdimm_device({}, kTag, kInfo);
    os.add_file(namespace_uuid_path(d), "6F1C2D3E-0000-4000-8000-000000000001");
    ProbedDevice p = probe_ok(d);
    EXPECT_EQ(p.tag, U(kTag));
}

TEST_F(ProbeNvdimm, NilNamespaceUuidIsUntagged) {
    DaxDevice d = os.add_nvdimm_device({}, kNil, kInfo);
    ProbedDevice p = probe_ok(d);
    EXPECT_FALSE(p.tag.has_value());
    EXPECT_NE(p.source, TagSource::nvdimm);
    EXPECT_EQ(p.notes->namespace_name, "namespace0.0");
    EXPECT_EQ(p.notes->infoblock_uuid, U(kInfo));
}

TEST_F(ProbeNvdimm, BadOrNilInfoblockUuidIsLeftOut) {
    for (const char* info : {"garbage\n", "00000000-0000-0000-0000-000000000000\n", ""}) {
        FakeHostOs host;
        DaxDevice d = host.add_nvdimm_device({}, kTag, kInfo);
        if (*info)
            host.add_file(infoblock_uuid_path(d), info);
        else
            host.remove(infoblock_uuid_path(d));
        ScanCache cache(host);
        auto p = probe_device(d, host, cache);
        ASSERT_TRUE(p.ok()) << info << ": " << p.error().message;
        EXPECT_EQ(p->tag, U(kTag)) << info;
        EXPECT_FALSE(p->notes->infoblock_uuid.has_value()) << info;
    }
}

TEST_F(ProbeNvdimm, MalformedNamespaceUuidRejects) {
    for (const char* bad : {"not-a-uuid\n", "6f1c2d3e-0000-4000-8000\n", "\n", "0\n",
                            "{6f1c2d3e-0000-4000-8000-000000000001}"}) {
        FakeHostOs host;
        DaxDevice d = host.add_nvdimm_device({}, kTag, kInfo);
        host.add_file(namespace_uuid_path(d), bad);
        ScanCache cache(host);
        auto p = probe_device(d, host, cache);
        ASSERT_FALSE(p.ok()) << "'" << bad << "' accepted";
        EXPECT_EQ(p.error().code, EINVAL);
        EXPECT_THAT(p.error().message,
                    AllOf(HasSubstr("malformed tag"), HasSubstr("namespace uuid"),
                          HasSubstr(namespace_uuid_path(d))));
    }
}

TEST_F(ProbeNvdimm, LabelLessNamespaceWithoutUuidIsUntagged) {
    DaxDevice d = os.add_nvdimm_device({}, kTag, kInfo);
    os.remove(namespace_uuid_path(d));
    ProbedDevice p = probe_ok(d);
    EXPECT_FALSE(p.tag.has_value());
    EXPECT_NE(p.source, TagSource::nvdimm);
    EXPECT_EQ(p.notes->namespace_name, "namespace0.0");
}

TEST_F(ProbeNvdimm, UnreadableNamespaceUuidRejects) {
    // Present (so not label-less) but unreadable: a directory in its place.
    DaxDevice d = os.add_nvdimm_device({}, kTag, kInfo);
    os.remove(namespace_uuid_path(d));
    os.add_dir(namespace_uuid_path(d));
    Error e = probe_fails(d);
    EXPECT_THAT(e.message, AllOf(HasSubstr("malformed tag"), HasSubstr("namespace uuid")));
}

TEST_F(ProbeNvdimm, BadNamespaceNameRejects) {
    for (const char* bad :
         {"namespace0\n", "namespaceX.Y\n", "../../../etc\n", "\n", "namespace0.0/../../x\n",
          "namespace0.0 namespace0.1\n", "Namespace0.0\n", "pfn0.0\n"}) {
        FakeHostOs host;
        DaxDevice d = host.add_nvdimm_device({}, kTag, kInfo);
        host.add_file(d.region_path() + "/namespace", bad);
        ScanCache cache(host);
        auto p = probe_device(d, host, cache);
        ASSERT_FALSE(p.ok()) << "'" << bad << "' accepted";
        EXPECT_EQ(p.error().code, EINVAL);
        EXPECT_THAT(p.error().message,
                    AllOf(HasSubstr("malformed tag"), HasSubstr("not a namespace name")));
    }
}

TEST_F(ProbeNvdimm, NamespaceNameWithNewlineIsTrimmed) {
    DaxDevice d = os.add_nvdimm_device(DaxSpec{}.at(12, 0), kTag, kInfo, 34);
    EXPECT_EQ(os.read_file(d.region_path() + "/namespace").value_or(""), "namespace12.34\n");
    ProbedDevice p = probe_ok(d);
    EXPECT_EQ(p.notes->namespace_name, "namespace12.34");
    EXPECT_EQ(p.tag, U(kTag));
}

// --- rejections ----------------------------------------------------------

TEST_F(Probe, HealthyDevicePassesVerification) {
    DaxDevice d = os.add_hmem_device();
    auto s = verify_device_node(d, os, fake::kDaxMajor);
    EXPECT_TRUE(s.ok()) << s.error().message;
    auto wrong = verify_device_node(d, os, fake::kDaxMajor + 1);
    EXPECT_FALSE(wrong.ok());
    auto none = verify_device_node(d, os, std::nullopt);
    EXPECT_FALSE(none.ok());
}

TEST_F(Probe, DevNodeMissing) {
    DaxDevice d = os.add_dcd_device({}, kTag);
    os.remove("/dev/dax0.0");
    Error e = probe_fails(d);
    EXPECT_EQ(e.code, ENOENT);
    EXPECT_THAT(e.message, HasSubstr("/dev/dax0.0"));
}

TEST_F(Probe, DevNodeIsABlockDevice) {
    DaxDevice d = os.add_hmem_device();
    os.add_node("/dev/dax0.0", NodeType::block_device, d.devno);
    Error e = probe_fails(d);
    EXPECT_EQ(e.code, ENODEV);
    EXPECT_THAT(e.message, HasSubstr("/dev/dax0.0 is not a character device"));
}

TEST_F(Probe, DevNodeIsNotADeviceAtAll) {
    for (NodeType t : {NodeType::regular, NodeType::directory, NodeType::other}) {
        FakeHostOs host;
        DaxDevice d = host.add_hmem_device();
        host.add_node("/dev/dax0.0", t, d.devno);
        ScanCache cache(host);
        auto p = probe_device(d, host, cache);
        ASSERT_FALSE(p.ok()) << static_cast<int>(t);
        EXPECT_EQ(p.error().code, ENODEV);
    }
}

TEST_F(Probe, DevNodeIsASymlinkToTheRightDevice) {
    // lstat() semantics: a link is not the device, even if it points at it.
    DaxDevice d = os.add_hmem_device();
    os.add_char_device("/dev/real-dax", d.devno.major, d.devno.minor);
    os.remove("/dev/dax0.0");
    os.add_symlink("/dev/dax0.0", "real-dax");
    Error e = probe_fails(d);
    EXPECT_EQ(e.code, ENODEV);
    EXPECT_THAT(e.message, HasSubstr("not a character device"));
}

TEST_F(Probe, CharDeviceOfAnotherMajor) {
    // Node and sysfs agree on 10:3, but 10 is not the dax major.
    DaxDevice d = os.add_hmem_device();
    os.add_char_device("/dev/dax0.0", 10, 3);
    os.add_file(d.sysfs_path() + "/dev", "10:3\n");
    os.add_relative_symlink("/sys/dev/char/10:3", d.sysfs_path());
    Error e = probe_fails(d);
    EXPECT_EQ(e.code, ENODEV);
    EXPECT_THAT(e.message, AllOf(HasSubstr("major 10"), HasSubstr("dax major (252)")));
}

TEST_F(Probe, NoDaxMajorRegistered) {
    DaxDevice d = os.add_hmem_device();
    os.set_dax_major(std::nullopt);
    Error e = probe_fails(d);
    EXPECT_EQ(e.code, ENODEV);
    EXPECT_THAT(e.message, HasSubstr("(none)"));
}

TEST_F(Probe, DaxMajorIsReadOncePerScan) {
    DaxDevice d = os.add_hmem_device();
    ScanCache cache(os);
    EXPECT_EQ(cache.dax_major(), fake::kDaxMajor);
    os.set_dax_major(std::nullopt); // after the scan started
    auto p = probe_device(d, os, cache);
    EXPECT_TRUE(p.ok()) << p.error().message;
    ScanCache next(os);
    EXPECT_EQ(next.dax_major(), std::nullopt);
    EXPECT_FALSE(probe_device(d, os, next).ok());
}

TEST_F(Probe, DaxMajorIsAnotherNumber) {
    DaxDevice d = os.add_hmem_device();
    os.set_dax_major(253);
    Error e = probe_fails(d);
    EXPECT_THAT(e.message, HasSubstr("dax major (253)"));
}

TEST_F(Probe, SysfsDevDisagreesWithTheNode) {
    DaxDevice d = os.add_hmem_device(DaxSpec{}.minor_number(0));
    os.add_file(d.sysfs_path() + "/dev", "252:1\n");
    Error e = probe_fails(d);
    EXPECT_EQ(e.code, ENODEV);
    EXPECT_THAT(e.message, HasSubstr("/dev/dax0.0 is 252:0 but sysfs says 252:1"));
}

TEST_F(Probe, NodeDisagreesWithSysfsDev) {
    DaxDevice d = os.add_hmem_device(DaxSpec{}.minor_number(0));
    os.add_char_device("/dev/dax0.0", fake::kDaxMajor, 9);
    Error e = probe_fails(d);
    EXPECT_EQ(e.code, ENODEV);
    EXPECT_THAT(e.message, HasSubstr("is 252:9 but sysfs says 252:0"));
}

TEST_F(Probe, SysfsDevMissingOrMalformed) {
    for (const char* bad : {"", "252\n", "252:x\n", "0xfc:0\n", "junk"}) {
        FakeHostOs host;
        DaxDevice d = host.add_hmem_device();
        if (*bad)
            host.add_file(d.sysfs_path() + "/dev", bad);
        else
            host.remove(d.sysfs_path() + "/dev");
        ScanCache cache(host);
        auto p = probe_device(d, host, cache);
        ASSERT_FALSE(p.ok()) << "'" << bad << "' accepted";
        EXPECT_THAT(p.error().message, AllOf(HasSubstr("device number unreadable"),
                                             HasSubstr(d.sysfs_path() + "/dev")))
            << bad;
    }
}

TEST_F(Probe, SubsystemIsNotDax) {
    DaxDevice d = os.add_hmem_device();
    os.add_dir("/sys/bus/platform");
    os.add_relative_symlink(d.sysfs_path() + "/subsystem", "/sys/bus/platform");
    Error e = probe_fails(d);
    EXPECT_EQ(e.code, ENODEV);
    EXPECT_THAT(e.message, HasSubstr("252:0 does not belong to the dax bus"));
}

TEST_F(Probe, SubsystemMissing) {
    DaxDevice d = os.add_hmem_device();
    os.remove(d.sysfs_path() + "/subsystem");
    Error e = probe_fails(d);
    EXPECT_EQ(e.code, ENODEV);
}

TEST_F(Probe, SubsystemOnlyLooksLikeDax) {
    // A directory named like the bus elsewhere is not the bus.
    DaxDevice d = os.add_hmem_device();
    os.add_dir("/tmp/sys/bus/dax");
    os.remove(d.sysfs_path() + "/subsystem");
    os.add_symlink(d.sysfs_path() + "/subsystem", "/tmp/sys/bus/dax");
    Error e = probe_fails(d);
    EXPECT_EQ(e.code, ENODEV);
}

TEST_F(Probe, DevCharLinkMissing) {
    DaxDevice d = os.add_hmem_device();
    os.remove(FakeHostOs::dev_char_link(d));
    Error e = probe_fails(d);
    EXPECT_EQ(e.code, ENODEV);
    EXPECT_THAT(e.message, HasSubstr("does not lead to " + d.name));
}

TEST_F(Probe, DevCharLinkToAnotherDeviceRejects) {
    DaxDevice d = os.add_hmem_device();
    DaxDevice other = os.add_hmem_device(DaxSpec{}.at(1, 0));
    os.remove(FakeHostOs::dev_char_link(d));
    os.add_symlink(FakeHostOs::dev_char_link(d), other.sysfs_path());
    Error e = probe_fails(d);
    EXPECT_EQ(e.code, ENODEV);
    EXPECT_THAT(e.message, HasSubstr("does not lead to " + d.name));
}

TEST_F(Probe, MalformedDcdUuidRejects) {
    for (const char* bad : {"not-a-uuid", "6f1c2d3e-0000-4000-8000-00000000000", "",
                            "6f1c2d3e-0000-4000-8000-00000000000g", "00", "1",
                            "{6f1c2d3e-0000-4000-8000-000000000001}"}) {
        FakeHostOs host;
        DaxDevice d = host.add_dcd_device({}, bad);
        ScanCache cache(host);
        auto p = probe_device(d, host, cache);
        ASSERT_FALSE(p.ok()) << "'" << bad << "' accepted";
        EXPECT_EQ(p.error().code, EINVAL) << bad;
        EXPECT_THAT(p.error().message,
                    AllOf(HasSubstr("malformed tag"), HasSubstr(d.sysfs_path() + "/uuid")))
            << bad;
    }
}

TEST_F(Probe, UnreadableDcdUuidRejects) {
    DaxDevice d = os.add_dcd_device({}, kTag);
    // Present (exists() is true) but unreadable.
    os.remove(d.sysfs_path() + "/uuid");
    os.add_dir(d.sysfs_path() + "/uuid");
    Error e = probe_fails(d);
    EXPECT_THAT(e.message, HasSubstr("malformed tag"));
}

TEST_F(Probe, RejectionHappensBeforeTheTagIsRead) {
    DaxDevice d = os.add_dcd_device({}, kTag);
    os.add_file(d.sysfs_path() + "/dev", "252:5\n");
    Error e = probe_fails(d);
    for (const auto& path : os.reads())
        EXPECT_NE(path, d.sysfs_path() + "/uuid") << "tag read from an unverified device";
    EXPECT_THAT(e.message, HasSubstr("sysfs says"));
}

// --- read_region_extents ---------------------------------------------------

TEST(ReadRegionExtents, OnlyExtentDirectoriesSortedByOffset) {
    FakeHostOs os;
    DaxDevice d = os.add_dcd_device(DaxSpec{}.at(7, 0), kTag);
    os.add_dcd_extent(d, 2, 0x3000, 0x1000, kTag);
    os.add_dcd_extent(d, 0, 0x1000, 0x1000, std::nullopt);
    os.add_dcd_extent(d, 10, 0x2000, 0x1000, "0");
    os.add_dcd_extent(d, 11, 0x0, 0x1000, kOther);
    // Entries that are not extents: ignored even if they look close.
    os.add_file(d.region_path() + "/extent7/offset", "junk");
    os.add_file(d.region_path() + "/extentA.B/offset", "junk");
    os.add_file(d.region_path() + "/extent7.1.old/offset", "junk");
    os.add_file(d.region_path() + "/myextent7.3/offset", "junk");
    // Numbered, but not as the kernel spells numbers: not extents either.
    os.add_file(d.region_path() + "/extent7.01/offset", "junk");
    os.add_file(d.region_path() + "/extent7.4294967296/offset", "junk");
    auto e = read_region_extents(d.region_path(), os);
    ASSERT_TRUE(e.ok()) << e.error().message;
    ASSERT_THAT(*e, SizeIs(4));
    EXPECT_EQ((*e)[0], (Extent{{7, 11}, 0x0, 0x1000, U(kOther)}));
    EXPECT_EQ((*e)[1], (Extent{{7, 0}, 0x1000, 0x1000, std::nullopt}));
    EXPECT_EQ((*e)[2], (Extent{{7, 10}, 0x2000, 0x1000, std::nullopt}));
    EXPECT_EQ((*e)[3], (Extent{{7, 2}, 0x3000, 0x1000, U(kTag)}));
}

TEST(ExtentName, ParsesTheKernelSpellingAndRoundTrips) {
    for (const char* name : {"extent0.0", "extent7.11", "extent4294967295.4294967295"}) {
        auto n = ExtentName::parse(name);
        ASSERT_TRUE(n.has_value()) << name;
        EXPECT_EQ(n->str(), name);
        EXPECT_EQ(*n, name);
    }
    EXPECT_EQ(ExtentName::parse("extent3.12"), (ExtentName{3, 12}));
    // Ordered by region, then index as a number (not as text).
    EXPECT_LT(ExtentName::parse("extent3.2"), ExtentName::parse("extent3.10"));
}

TEST(ExtentName, RejectsEverythingElse) {
    for (const char* name : {"",
                             "extent",
                             "extent.",
                             "extent1.",
                             "extent.1",
                             "extent1",
                             "extent01.1",
                             "extent1.01",
                             "extent-1.1",
                             "extent+1.1",
                             "extent1.-1",
                             "extent 1.1",
                             "extent1.1 ",
                             "extent1.1.1",
                             "extent1.1\n",
                             "Extent1.1",
                             "xextent1.1",
                             "extent4294967296.0",
                             "extent0.4294967296",
                             "extent99999999999.0",
                             "extentA.B",
                             "extent1,1"}) {
        EXPECT_FALSE(ExtentName::parse(name).has_value()) << '"' << name << '"';
    }
}

TEST(ReadRegionExtents, RegionWithoutExtentsIsEmpty) {
    FakeHostOs os;
    DaxDevice d = os.add_hmem_device();
    auto e = read_region_extents(d.region_path(), os);
    ASSERT_TRUE(e.ok());
    EXPECT_THAT(*e, IsEmpty());
}

TEST(ReadRegionExtents, ErrorsNameTheFile) {
    FakeHostOs os;
    DaxDevice d = os.add_dcd_device({}, kTag);
    os.add_dcd_extent(d, 0, 0, 0x1000, "bogus");
    auto e = read_region_extents(d.region_path(), os);
    ASSERT_FALSE(e.ok());
    EXPECT_THAT(e.error().message, HasSubstr(d.region_path() + "/extent0.0/uuid"));

    auto missing = read_region_extents("/sys/nowhere", os);
    ASSERT_FALSE(missing.ok());
    EXPECT_EQ(missing.error().code, ENOENT);
}

TEST(ReadRegionExtents, DirectoryOrderDoesNotMatter) {
    // The fake lists directories in reverse; both orders must give one result.
    FakeHostOs a;
    FakeHostOs b;
    DaxDevice da = a.add_dcd_device({}, kTag);
    DaxDevice db = b.add_dcd_device({}, kTag);
    a.add_dcd_extent(da, 0, 0x2000, 1, kTag);
    a.add_dcd_extent(da, 1, 0x1000, 1, kTag);
    b.add_dcd_extent(db, 0, 0x1000, 1, kTag);
    b.add_dcd_extent(db, 1, 0x2000, 1, kTag);
    auto ea = read_region_extents(da.region_path(), a);
    auto eb = read_region_extents(db.region_path(), b);
    ASSERT_TRUE(ea.ok() && eb.ok());
    ASSERT_THAT(*ea, SizeIs(2));
    EXPECT_EQ((*ea)[0].offset, 0x1000u);
    EXPECT_EQ((*eb)[0].offset, 0x1000u);
    EXPECT_THAT(*ea, UnorderedElementsAre(::testing::Field(&Extent::name, "extent0.0"),
                                          ::testing::Field(&Extent::name, "extent0.1")));
}

} // namespace
} // namespace tagmem
