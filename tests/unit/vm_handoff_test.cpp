// SPDX-License-Identifier: Apache-2.0
// Handing tags to a guest (core/vm_handoff.hpp): which tags may go, the
// guest physical layout, and the QEMU arguments, kernel parameters, fw_cfg
// JSON and libvirt XML rendered from it. Inputs are tag_to_json objects of
// real TagRecords, as tagmemfs and a scan produce them.
#include "vm_handoff.hpp"

#include "json_output.hpp"

#include <algorithm>
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tagmem::vm {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr std::uint64_t MiB = kMiB;
constexpr std::uint64_t GiB = kGiB;

Uuid tag_n(unsigned n) {
    return Uuid::parse(fmt::format("6f1c2d3e-0000-4000-8000-{:012x}", n)).value();
}

struct Dev {
    std::uint64_t size = 256 * MiB;
    std::uint64_t align = 2 * MiB;
    DevMode mode = DevMode::devdax;
    TagState state = TagState::ready;
    std::string name = "";
    bool shareable = true;
    Performance perf = {};
    Access access = {};
    unsigned devices = 1;
};

json tag_json(unsigned n, const Dev& d = {}) {
    TagRecord r;
    r.tag = tag_n(n);
    r.name = Interned(d.name);
    r.source = TagSource::dcd;
    r.state = d.state;
    r.shareable = d.shareable;
    r.access = d.access;
    if (d.state != TagState::ready)
        r.reason = "the reason";
    for (unsigned i = 0; i < d.devices; ++i) {
        auto p = std::make_shared<ProbedDevice>();
        p->dev.name = fmt::format("dax{}.{}", n, i);
        p->dev.size = d.size;
        p->dev.align = d.align;
        p->dev.mode = d.mode;
        p->numa_node = 1;
        p->source = TagSource::dcd;
        p->performance = Shared<Performance>(d.perf);
        p->tag = r.tag;
        r.devices.push_back(p);
    }
    return tag_to_json(r, false);
}

GuestSpec guest(std::uint64_t ram = GiB, std::string machine = "pc") {
    GuestSpec g;
    g.ram_size = ram;
    g.machine = std::move(machine);
    return g;
}

Plan plan_ok(const json& tags, const std::vector<Uuid>& wanted, const GuestSpec& g = guest()) {
    auto r = plan_handoff(tags, wanted, g);
    EXPECT_TRUE(r.refused.empty()) << (r.refused.empty() ? "" : r.refused.front().message);
    EXPECT_TRUE(r.plan.has_value());
    return r.plan ? *r.plan : Plan{};
}

std::vector<Refused> refused(const json& tags, const std::vector<Uuid>& wanted,
                             const GuestSpec& g = guest()) {
    auto r = plan_handoff(tags, wanted, g);
    EXPECT_FALSE(r.plan.has_value());
    return r.refused;
}

std::string unescape_qemu(const std::string& s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        out += s[i];
        if (s[i] == ',') {
            EXPECT_TRUE(i + 1 < s.size() && s[i + 1] == ',') << "lone comma in " << s;
            ++i;
        }
    }
    return out;
}

TEST(VmHandoff, TwoTagsLandAbove4GInTheOrderGiven) {
    json tags = {tag_json(1, {.size = 256 * MiB}), tag_json(2, {.size = 1 * GiB})};
    Plan p = plan_ok(tags, {tag_n(2), tag_n(1)}, guest(512 * MiB));
    ASSERT_EQ(p.tags.size(), 2u);
    EXPECT_EQ(p.ram_below_4g, 512 * MiB);
    EXPECT_EQ(p.total, 512 * MiB + GiB + 256 * MiB);
    EXPECT_EQ(p.tags[0].tag, tag_n(2).str());
    EXPECT_EQ(p.tags[0].guest_node, 1u);
    EXPECT_EQ(p.tags[0].object_id, "tagmem1");
    EXPECT_EQ(p.tags[0].guest_start, 4 * GiB);
    EXPECT_EQ(p.tags[1].tag, tag_n(1).str());
    EXPECT_EQ(p.tags[1].guest_node, 2u);
    EXPECT_EQ(p.tags[1].object_id, "tagmem2");
    EXPECT_EQ(p.tags[1].guest_start, 5 * GiB);
    EXPECT_EQ(kernel_params(p), "memmap=0x40000000%0x100000000-1+0xefffffff "
                                "memmap=0x10000000%0x140000000-1+0xefffffff");
}

TEST(VmHandoff, QemuArgumentsAreExactlyTheContract) {
    Plan p =
        plan_ok(json{tag_json(1, {.size = 128 * MiB, .name = "db"})}, {tag_n(1)}, guest(512 * MiB));
    auto args = qemu_args(p);
    ASSERT_EQ(args.size(), 16u);
    EXPECT_THAT(std::vector<std::string>(args.begin(), args.begin() + 14),
                ElementsAre("-machine", "pc,max-ram-below-4g=536870912", "-m", "640M", "-smp", "1",
                            "-object", "memory-backend-ram,id=tagmem-ram,size=536870912", "-numa",
                            "node,nodeid=0,cpus=0,memdev=tagmem-ram", "-object",
                            "memory-backend-file,id=tagmem1,size=134217728,mem-path=/run/tagmem/" +
                                tag_n(1).str() + "/data,share=on",
                            "-numa", "node,nodeid=1,memdev=tagmem1"));
    EXPECT_EQ(args[14], "-fw_cfg");
    const std::string prefix = "name=opt/org.tagmem/tags,string=";
    ASSERT_TRUE(args[15].starts_with(prefix));
    json item = json::parse(unescape_qemu(args[15].substr(prefix.size())));
    EXPECT_EQ(item, json::parse(handoff_json(p)));
    EXPECT_EQ(item["format"], "tagmem-handoff");
    EXPECT_EQ(item["version"], 1);
    ASSERT_EQ(item["tags"].size(), 1u);
    const json& t = item["tags"][0];
    EXPECT_EQ(t["tag"], tag_n(1).str());
    EXPECT_EQ(t["name"], "db");
    EXPECT_EQ(t["shareable"], true);
    EXPECT_EQ(t["size"], 128 * MiB);
    EXPECT_EQ(t["guest_start"], 4 * GiB);
    EXPECT_EQ(t["guest_node"], 1);
    EXPECT_EQ(t["host"], (json{{"device", "dax1.0"}, {"numa_node", 1}, {"source", "dcd"}}));
}

TEST(VmHandoff, HostPerformanceTravelsWithOnlyTheKeysKnown) {
    Performance perf = {};
    perf.read_latency_ns = 350;
    perf.write_bandwidth_mbps = 12000;
    Plan p = plan_ok(json{tag_json(1, {.perf = perf})}, {tag_n(1)});
    json item = json::parse(handoff_json(p));
    EXPECT_EQ(item["tags"][0]["host"]["performance"],
              (json{{"read_latency_ns", 350}, {"write_bandwidth_mbps", 12000}}));
}

TEST(VmHandoff, OutputIsDeterministicForEveryGuest) {
    json tags = {tag_json(1), tag_json(2), tag_json(3)};
    std::vector<Uuid> want = {tag_n(3), tag_n(1), tag_n(2)};
    Plan a = plan_ok(tags, want);
    Plan b = plan_ok(tags, want);
    EXPECT_EQ(qemu_args(a), qemu_args(b));
    EXPECT_EQ(libvirt_xml(a), libvirt_xml(b));
    EXPECT_EQ(plan_json(a), plan_json(b));
    // The ids follow the order asked, whatever the host's order.
    EXPECT_EQ(a.tags[0].tag, tag_n(3).str());
    EXPECT_EQ(a.tags[2].object_id, "tagmem3");
}

TEST(VmHandoff, MachineRulesDecideWhereNodeZeroEnds) {
    json tags = {tag_json(1)};
    // pc keeps up to 3 GiB below 4 GiB, q35 up to 2 GiB; the rest of node 0
    // follows 4 GiB, then the tags.
    struct Case {
        std::string machine;
        std::uint64_t ram, low, start;
    };
    for (const Case& c :
         {Case{"pc", 2 * GiB, 2 * GiB, 4 * GiB}, Case{"pc", 3 * GiB, 3 * GiB, 4 * GiB},
          Case{"pc", 8 * GiB, 3 * GiB, 9 * GiB}, Case{"pc-i440fx-7.2", 1 * GiB, 1 * GiB, 4 * GiB},
          Case{"q35", 2 * GiB, 2 * GiB, 4 * GiB}, Case{"q35", 3 * GiB, 2 * GiB, 5 * GiB},
          Case{"pc-q35-7.2", 6 * MiB, 6 * MiB, 4 * GiB}}) {
        Plan p = plan_ok(tags, {tag_n(1)}, guest(c.ram, c.machine));
        EXPECT_EQ(p.ram_below_4g, c.low) << c.machine << " " << c.ram;
        EXPECT_EQ(p.tags[0].guest_start, c.start) << c.machine << " " << c.ram;
        EXPECT_EQ(qemu_args(p)[1], fmt::format("{},max-ram-below-4g={}", c.machine, c.low));
    }
}

TEST(VmHandoff, CpusAllOnNodeZero) {
    GuestSpec g = guest();
    g.cpus = 4;
    auto args = qemu_args(plan_ok(json{tag_json(1)}, {tag_n(1)}, g));
    EXPECT_EQ(args[5], "4");
    EXPECT_EQ(args[9], "node,nodeid=0,cpus=0-3,memdev=tagmem-ram");
}

TEST(VmHandoff, LargeDeviceAlignmentIsPassedAndMisplacementWarned) {
    json tags = {tag_json(1, {.size = 2 * MiB}), tag_json(2, {.size = 2 * GiB, .align = GiB})};
    Plan p = plan_ok(tags, {tag_n(1), tag_n(2)});
    auto args = qemu_args(p);
    EXPECT_THAT(args[15], HasSubstr(",share=on,align=1073741824"));
    EXPECT_THAT(args[11], Not(HasSubstr("align=")));
    ASSERT_EQ(p.warnings.size(), 1u);
    EXPECT_THAT(p.warnings[0], HasSubstr("not on its device's 1 GiB alignment"));
    // Larger first: aligned, no warning.
    EXPECT_TRUE(plan_ok(tags, {tag_n(2), tag_n(1)}).warnings.empty());
}

TEST(VmHandoff, UnshareableTagIsWarnedAbout) {
    Plan p = plan_ok(json{tag_json(1, {.shareable = false})}, {tag_n(1)});
    ASSERT_EQ(p.warnings.size(), 1u);
    EXPECT_THAT(p.warnings[0], HasSubstr("not shareable"));
}

TEST(VmHandoff, CommasAreDoubledForQemu) {
    GuestSpec g = guest();
    g.mount_point = "/run/tag,mem/";
    Plan p = plan_ok(json{tag_json(1, {.name = "a,b,,c"})}, {tag_n(1)}, g);
    EXPECT_EQ(p.tags[0].mem_path, "/run/tag,mem/" + tag_n(1).str() + "/data");
    auto args = qemu_args(p);
    EXPECT_THAT(args[11], HasSubstr("mem-path=/run/tag,,mem/" + tag_n(1).str() + "/data,share"));
    json item = json::parse(unescape_qemu(args[15].substr(args[15].find("string=") + 7)));
    EXPECT_EQ(item["tags"][0]["name"], "a,b,,c");
    EXPECT_EQ(qemu_escape(",,x,"), ",,,,x,,");
}

TEST(VmHandoff, ShellQuotingSurvivesEveryCharacter) {
    EXPECT_EQ(shell_quote("node,nodeid=1,memdev=tagmem1"), "node,nodeid=1,memdev=tagmem1");
    EXPECT_EQ(shell_quote(""), "''");
    EXPECT_EQ(shell_quote("a b"), "'a b'");
    EXPECT_EQ(shell_quote("{\"name\":\"it's\"}"), "'{\"name\":\"it'\\''s\"}'");
    EXPECT_EQ(shell_quote("$(x)`y`\\"), "'$(x)`y`\\'");
}

TEST(VmHandoff, LibvirtXmlEscapesAndCarriesTheSameItem) {
    Plan p = plan_ok(json{tag_json(1, {.name = "<a & 'b'>"})}, {tag_n(1)}, guest(512 * MiB));
    std::string x = libvirt_xml(p);
    // No <sysinfo type='fwcfg'>: libvirt 9.0 hands its entry to QEMU
    // XML-escaped and with bare commas, which QEMU refuses. The item goes
    // through the passthrough, exactly the plain QEMU argument.
    EXPECT_THAT(x, Not(HasSubstr("<sysinfo")));
    const auto args = qemu_args(p);
    const auto fw = std::find(args.begin(), args.end(), "-fw_cfg");
    ASSERT_NE(fw, args.end());
    std::string esc;
    for (char c : *(fw + 1)) {
        switch (c) {
        case '&': esc += "&amp;"; break;
        case '<': esc += "&lt;"; break;
        case '>': esc += "&gt;"; break;
        case '\'': esc += "&apos;"; break;
        case '"': esc += "&quot;"; break;
        default: esc += c;
        }
    }
    EXPECT_THAT(x, HasSubstr("<qemu:arg value='-fw_cfg'/>\n    <qemu:arg value='" + esc + "'/>"));
    EXPECT_THAT(x, HasSubstr("&lt;a &amp; &apos;b&apos;&gt;"));
    EXPECT_THAT(x, HasSubstr("name=opt/org.tagmem/tags,string={&quot;format&quot;:"));
    EXPECT_THAT(x, Not(HasSubstr("<a &")));
    EXPECT_THAT(x, HasSubstr("<cell id='0' cpus='0' memory='524288' unit='KiB'/>"));
    EXPECT_THAT(x, HasSubstr("<qemu:arg value='max-ram-below-4g=536870912'/>"));
    EXPECT_THAT(x, HasSubstr("<qemu:arg value='768M'/>"));
    EXPECT_THAT(x, HasSubstr("<qemu:arg value='node,nodeid=1,memdev=tagmem1'/>"));
    EXPECT_THAT(x, HasSubstr(kernel_params(p)));
    // QEMU's own escaping of the item's commas, as in the plain arguments.
    EXPECT_THAT(x, HasSubstr("&quot;,,&quot;"));
}

TEST(VmHandoff, PlanJsonHasEverything) {
    Plan p = plan_ok(json{tag_json(1)}, {tag_n(1)});
    json j = plan_json(p);
    EXPECT_EQ(j["qemu"], json(qemu_args(p)));
    EXPECT_EQ(j["kernel_cmdline"], kernel_params(p));
    EXPECT_EQ(j["fw_cfg"]["name"], "opt/org.tagmem/tags");
    EXPECT_EQ(j["fw_cfg"]["content"], json::parse(handoff_json(p)));
    EXPECT_EQ(j["layout"]["tags"][0]["guest_start"], 4 * GiB);
}

// --- refusals ---

TEST(VmHandoff, UnusableTagsAreRefusedEachWithItsReason) {
    json tags = {tag_json(1),
                 tag_json(2, {.state = TagState::conflict, .devices = 2}),
                 tag_json(3, {.mode = DevMode::system_ram, .state = TagState::system_ram}),
                 tag_json(4, {.state = TagState::offered, .devices = 0}),
                 tag_json(5, {.state = TagState::no_node}),
                 tag_json(6, {.mode = DevMode::disabled, .state = TagState::disabled})};
    auto r = refused(tags, {tag_n(1), tag_n(9), tag_n(2), tag_n(3), tag_n(4), tag_n(5), tag_n(6)});
    ASSERT_EQ(r.size(), 6u);
    EXPECT_EQ(r[0].why, Refusal::unknown_tag);
    EXPECT_THAT(r[0].message, HasSubstr("no device carries tag " + tag_n(9).str()));
    EXPECT_EQ(r[1].why, Refusal::conflict);
    EXPECT_EQ(r[2].why, Refusal::not_usable);
    EXPECT_THAT(r[2].message, HasSubstr("it is system-ram: the reason"));
    EXPECT_EQ(r[3].why, Refusal::not_usable);
    EXPECT_THAT(r[3].message, HasSubstr("offered"));
    EXPECT_EQ(r[4].why, Refusal::not_usable);
    EXPECT_THAT(r[4].message, HasSubstr("no-node"));
    EXPECT_EQ(r[5].why, Refusal::not_usable);
}

TEST(VmHandoff, ReadyButNotDevdaxIsRefused) {
    // A state this side does not expect: refuse by the device's mode too.
    json t = tag_json(1);
    t["devices"][0]["mode"] = "system-ram";
    auto r = refused(json{t}, {tag_n(1)});
    ASSERT_EQ(r.size(), 1u);
    EXPECT_THAT(r[0].message, HasSubstr("mode system-ram, not devdax"));
    // And a malformed answer (no tags array at all) calls every tag unknown.
    EXPECT_EQ(refused(json::object(), {tag_n(1)})[0].why, Refusal::unknown_tag);
}

TEST(VmHandoff, BadRequestsAreUsageErrors) {
    json tags = {tag_json(1)};
    auto one = [&](const GuestSpec& g, std::vector<Uuid> want = {tag_n(1)}) {
        auto r = refused(tags, want, g);
        EXPECT_EQ(r.size(), 1u);
        return r.empty() ? Refused{} : r[0];
    };
    EXPECT_EQ(one(guest(0)).why, Refusal::usage);
    EXPECT_THAT(one(guest(3 * MiB)).message, HasSubstr("not a positive multiple of 2 MiB"));
    EXPECT_THAT(one(guest(GiB, "virt")).message, HasSubstr("neither pc"));
    GuestSpec g = guest();
    g.cpus = 0;
    EXPECT_EQ(one(g).why, Refusal::usage);
    g = guest();
    g.mount_point = "relative";
    EXPECT_EQ(one(g).why, Refusal::usage);
    g.mount_point = "/run/a\nb";
    EXPECT_EQ(one(g).why, Refusal::usage);
    EXPECT_THAT(one(guest(), {tag_n(1), tag_n(1)}).message, HasSubstr("asked for twice"));
    EXPECT_EQ(one(guest(), {}).why, Refusal::usage);
}

TEST(VmHandoff, SizesNotOn2MiBAreRefused) {
    auto r = refused(json{tag_json(1, {.size = 3 * MiB})}, {tag_n(1)});
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].why, Refusal::layout);
    EXPECT_THAT(r[0].message, HasSubstr("not a multiple of 2 MiB"));
}

TEST(VmHandoff, TagsBeyondTheAddressSpaceAreRefused) {
    // The third ends past 980 GiB, where QEMU would relocate or refuse.
    json tags = {tag_json(1, {.size = 512 * GiB}), tag_json(2, {.size = 256 * GiB}),
                 tag_json(3, {.size = 512 * GiB})};
    auto r = refused(tags, {tag_n(1), tag_n(2), tag_n(3)});
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].why, Refusal::layout);
    EXPECT_THAT(r[0].message, HasSubstr(tag_n(3).str()));
    EXPECT_THAT(r[0].message, HasSubstr("beyond 980 GiB, where QEMU moves"));
    // With a larger limit they fit.
    GuestSpec g = guest();
    g.phys_limit = 1ull << 46;
    EXPECT_EQ(plan_ok(tags, {tag_n(1), tag_n(2), tag_n(3)}, g).tags[2].guest_start,
              4 * GiB + 768 * GiB);
}

TEST(VmHandoff, SizesThatWrapAroundAreRefusedNotWrapped) {
    GuestSpec g = guest();
    g.phys_limit = ~std::uint64_t{0};
    json tags = {tag_json(1, {.size = 1ull << 63}), tag_json(2, {.size = 1ull << 63})};
    auto r = refused(tags, {tag_n(1), tag_n(2)}, g);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].why, Refusal::layout);
    EXPECT_THAT(r[0].message, HasSubstr("2^64"));
    // RAM near 2^64 as well.
    auto r2 = refused(json{tag_json(1)}, {tag_n(1)}, guest(~std::uint64_t{0} - 2 * MiB + 1, "pc"));
    ASSERT_FALSE(r2.empty());
}

TEST(VmHandoff, HugeTagCountsAreRefusedClearly) {
    json tags = json::array();
    std::vector<Uuid> want;
    for (unsigned i = 1; i <= 200; ++i) {
        tags.push_back(tag_json(i, {.size = 2 * MiB}));
        want.push_back(tag_n(i));
    }
    auto r = refused(tags, want);
    ASSERT_FALSE(r.empty());
    EXPECT_EQ(r[0].why, Refusal::layout);
    EXPECT_THAT(r[0].message, HasSubstr("at most 127"));
    // Fewer than QEMU's node limit, but more memmap= than a kernel command
    // line holds.
    want.resize(40);
    r = refused(tags, want);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_THAT(r[0].message, HasSubstr("kernel parameters for 40 tags"));
    want.resize(16);
    EXPECT_EQ(plan_ok(tags, want).tags.back().guest_start, 4 * GiB + 15 * 2 * MiB);
}

TEST(VmHandoff, ParseSize) {
    EXPECT_EQ(parse_size("512").value(), 512 * MiB); // as QEMU's -m: MiB
    EXPECT_EQ(parse_size("512M").value(), 512 * MiB);
    EXPECT_EQ(parse_size("4G").value(), 4 * GiB);
    EXPECT_EQ(parse_size("4GiB").value(), 4 * GiB);
    EXPECT_EQ(parse_size("2T").value(), 2048 * GiB);
    EXPECT_EQ(parse_size("4096B").value(), 4096u);
    EXPECT_EQ(parse_size("64K").value(), 65536u);
    for (const char* bad :
         {"", "G", "-1G", "1X", "1.5G", " 1G", "1G ", "99999999999999999999", "17179869184T"})
        EXPECT_FALSE(parse_size(bad).ok()) << bad;
}

TEST(VmHandoff, AccessIsCheckedLikeTheKernel) {
    json a = {{"owner", "qemu"}, {"group", "kvm"}, {"uid", 64055}, {"gid", 108}, {"mode", "0660"}};
    EXPECT_EQ(may_open_rw(a, 64055, {}), true);
    EXPECT_EQ(may_open_rw(a, 1000, {100, 108}), true);
    EXPECT_EQ(may_open_rw(a, 1000, {100}), false);
    EXPECT_EQ(may_open_rw(a, 0, {}), true);
    a["mode"] = "0406"; // owner only reads: the owner is refused though others may
    EXPECT_EQ(may_open_rw(a, 64055, {}), false);
    EXPECT_EQ(may_open_rw(a, 1000, {}), true);
    a["mode"] = "0640";
    EXPECT_EQ(may_open_rw(a, 1000, {108}), false);
    for (const char* bad : {"", "9", "0x1", "077777"}) {
        a["mode"] = bad;
        EXPECT_EQ(may_open_rw(a, 1000, {}), std::nullopt) << bad;
    }
    EXPECT_EQ(may_open_rw(json::object(), 1000, {}), std::nullopt);
}

} // namespace
} // namespace tagmem::vm
