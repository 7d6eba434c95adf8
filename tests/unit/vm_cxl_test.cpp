// SPDX-License-Identifier: Apache-2.0
// The CXL hand-off's host side (core/vm_cxl.hpp): which tags may go, the
// QEMU arguments and fw_cfg item of vm-args --cxl, and the QMP commands of
// vm-attach/vm-detach. Inputs are tag_to_json objects of real TagRecords.
#include "vm_cxl.hpp"

#include "handoff.hpp"
#include "json_output.hpp"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>

namespace tagmem::vm {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

constexpr std::uint64_t MiB = kMiB;

Uuid tag_n(unsigned n) {
    return Uuid::parse(fmt::format("5be13bce-0000-4000-8000-{:012x}", n)).value();
}

json tag_json(unsigned n, std::uint64_t size = 256 * MiB, TagState state = TagState::ready,
              unsigned devices = 1) {
    TagRecord r;
    r.tag = tag_n(n);
    r.name = Interned(fmt::format("db{}", n));
    r.source = TagSource::dcd;
    r.state = state;
    r.shareable = true;
    if (state != TagState::ready)
        r.reason = "the reason";
    for (unsigned i = 0; i < devices; ++i) {
        auto p = std::make_shared<ProbedDevice>();
        p->dev.name = fmt::format("dax{}.{}", n, i);
        p->dev.size = size;
        p->dev.align = 2 * MiB;
        p->dev.mode = DevMode::devdax;
        p->numa_node = 1;
        p->source = TagSource::dcd;
        Performance perf;
        perf.read_latency_ns = 350;
        p->performance = Shared<Performance>(perf);
        p->tag = r.tag;
        r.devices.push_back(p);
    }
    return tag_to_json(r, false);
}

CxlPlan plan_ok(const json& tags, const std::vector<Uuid>& wanted) {
    auto r = plan_cxl(tags, wanted, CxlGuestSpec{});
    EXPECT_TRUE(r.refused.empty()) << (r.refused.empty() ? "" : r.refused.front().message);
    return r.plan ? *r.plan : CxlPlan{};
}

Refusal refusal(const json& tags, const std::vector<Uuid>& wanted) {
    auto r = plan_cxl(tags, wanted, CxlGuestSpec{});
    EXPECT_FALSE(r.plan.has_value());
    return r.refused.empty() ? Refusal::usage : r.refused.front().why;
}

bool has(const std::vector<std::string>& args, const std::string& a) {
    return std::find(args.begin(), args.end(), a) != args.end();
}

TEST(VmCxl, OneDeviceAndRootPortPerTagInOneWindow) {
    json tags = {tag_json(1), tag_json(2, 512 * MiB)};
    CxlPlan p = plan_ok(tags, {tag_n(2), tag_n(1)});
    ASSERT_EQ(p.tags.size(), 2u);
    EXPECT_EQ(p.window, 768 * MiB);
    const auto a = cxl_qemu_args(p);
    const std::string t2 = tag_n(2).str(), t1 = tag_n(1).str();
    EXPECT_TRUE(has(a, "q35,cxl=on"));
    EXPECT_TRUE(has(a, "pxb-cxl,bus_nr=12,bus=pcie.0,id=tagmem-cxl-hb,hdm_for_passthrough=true"));
    EXPECT_TRUE(has(a, fmt::format("memory-backend-file,id=tagmem-dc0,size={},mem-path=/run/"
                                   "tagmem/{}/data,share=on",
                                   512 * MiB, t2)));
    EXPECT_TRUE(has(a, "cxl-rp,port=1,bus=tagmem-cxl-hb,id=tagmem-rp1,chassis=0,slot=3"));
    EXPECT_TRUE(has(a, fmt::format("cxl-type3,bus=tagmem-rp0,id=tagmem-{},volatile-dc-memdev="
                                   "tagmem-dc0,num-dc-regions=1,sn={}",
                                   t2, cxl_serial(p.tags[0]))));
    EXPECT_TRUE(has(a, fmt::format("cxl-fmw.0.targets.0=tagmem-cxl-hb,cxl-fmw.0.size={},cxl-fmw.0."
                                   "interleave-granularity=1k",
                                   768 * MiB)));
    EXPECT_NE(cxl_serial(p.tags[0]), cxl_serial(p.tags[1]));
}

TEST(VmCxl, TheItemIsReadByTheGuestAndIgnoredByVersion1Matching) {
    CxlPlan p = plan_ok(json::array({tag_json(1)}), {tag_n(1)});
    auto h = parse_handoff(cxl_handoff_json(p));
    ASSERT_TRUE(h) << h.error().message;
    EXPECT_TRUE(h->entries.empty()); // nothing for the boot-time matcher
    EXPECT_TRUE(h->make_dc_regions);
    ASSERT_EQ(h->cxl.size(), 1u);
    const HandoffEntry* e = h->match_cxl(tag_n(1));
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->name, "db1");
    EXPECT_TRUE(e->shareable);
    EXPECT_EQ(e->size, 256 * MiB);
    EXPECT_EQ(e->cxl_device, "tagmem-" + tag_n(1).str());
    EXPECT_EQ(e->cxl_serial, cxl_serial(p.tags[0]));
    EXPECT_EQ(e->host_performance.read_latency_ns, 350u);
    EXPECT_FALSE(e->cxl_cdat_from_host); // QEMU's own CDAT: its figures are not the host's
    EXPECT_EQ(h->match_cxl(tag_n(2)), nullptr);
    // With the host's CDAT (--cdat-dir) the item says so.
    CxlPlan with_cdat = p;
    with_cdat.tags[0].cdat_path = "/var/lib/vm1/x.cdat";
    auto hc = parse_handoff(cxl_handoff_json(with_cdat));
    ASSERT_TRUE(hc) << hc.error().message;
    EXPECT_TRUE(hc->match_cxl(tag_n(1))->cxl_cdat_from_host);
    auto j = json::parse(cxl_handoff_json(with_cdat));
    j["cxl"]["tags"][0]["cdat_from_host"] = "yes";
    EXPECT_FALSE(parse_handoff(j.dump()));
    // On the command line, QEMU's commas doubled.
    const auto a = cxl_qemu_args(p);
    EXPECT_THAT(a.back(), HasSubstr("name=opt/org.tagmem/tags,string={\"cxl\":{"));
    EXPECT_THAT(a.back(), HasSubstr(",,\"tags\""));
}

TEST(VmCxl, Refusals) {
    EXPECT_EQ(refusal(json::array({tag_json(1)}), {tag_n(9)}), Refusal::unknown_tag);
    EXPECT_EQ(refusal(json::array({tag_json(1, 256 * MiB, TagState::offered)}), {tag_n(1)}),
              Refusal::not_usable);
    EXPECT_EQ(refusal(json::array({tag_json(1, 256 * MiB, TagState::conflict, 2)}), {tag_n(1)}),
              Refusal::conflict);
    // HDM decoders map 256 MiB blocks.
    EXPECT_EQ(refusal(json::array({tag_json(1, 258 * MiB)}), {tag_n(1)}), Refusal::layout);
    EXPECT_EQ(refusal(json::array({tag_json(1)}), {tag_n(1), tag_n(1)}), Refusal::usage);
    EXPECT_EQ(refusal(json::array({tag_json(1)}), {}), Refusal::usage);
    std::vector<Uuid> many;
    json tags = json::array();
    for (unsigned i = 0; i <= kMaxCxlTags; ++i) {
        many.push_back(tag_n(i));
        tags.push_back(tag_json(i));
    }
    EXPECT_EQ(refusal(tags, many), Refusal::layout);
    // The request's own checks are the boot-time hand-off's (vm_handoff.hpp).
    for (const char* mount : {"run/tagmem", "/run/tag\nmem"}) {
        CxlGuestSpec g;
        g.mount_point = mount;
        auto r = plan_cxl(json::array({tag_json(1)}), {tag_n(1)}, g);
        ASSERT_EQ(r.refused.size(), 1u) << mount;
        EXPECT_EQ(r.refused[0].why, Refusal::usage);
        EXPECT_THAT(r.refused[0].message, HasSubstr("without control characters"));
    }
}

TEST(VmCxl, QmpCommandsCoverTheTagFromOffsetZero) {
    const std::string t = tag_n(1).str();
    json add = qmp_add_capacity("tagmem-" + t, t, 256 * MiB);
    EXPECT_EQ(add, json::parse(fmt::format(
                       R"({{"execute":"cxl-add-dynamic-capacity","arguments":{{
                       "path":"/machine/peripheral/tagmem-{0}","host-id":0,"region":0,
                       "tag":"{0}","selection-policy":"prescriptive",
                       "extents":[{{"offset":0,"len":268435456}}]}}}})",
                       t)));
    json rel = qmp_release_capacity("dev0", t, 256 * MiB);
    EXPECT_EQ(rel["execute"], "cxl-release-dynamic-capacity");
    EXPECT_EQ(rel["arguments"]["removal-policy"], "prescriptive");
    EXPECT_EQ(rel["arguments"]["path"], "/machine/peripheral/dev0");
    EXPECT_EQ(rel["arguments"]["extents"], add["arguments"]["extents"]);
    EXPECT_EQ(qmp_qom_get("/machine/peripheral/dev0", "type"),
              json::parse(R"({"execute":"qom-get","arguments":{"path":
                             "/machine/peripheral/dev0","property":"type"}})"));
    EXPECT_EQ(qmp_inject_poison("dev0", 4096, 64)["arguments"],
              json::parse(R"({"path":"/machine/peripheral/dev0","start":4096,"length":64})"));
}

TEST(VmCxl, TheCdatCarriesTheHostsFiguresForTheDcRegion) {
    CxlGuestSpec g;
    g.cdat_dir = "/var/lib/vm1";
    auto r = plan_cxl(json::array({tag_json(1)}), {tag_n(1)}, g);
    ASSERT_TRUE(r.plan);
    const CxlTag& t = r.plan->tags[0];
    EXPECT_EQ(t.cdat_path, "/var/lib/vm1/" + tag_n(1).str() + ".cdat");
    EXPECT_THAT(cxl_qemu_args(*r.plan)[11], HasSubstr(",cdat=/var/lib/vm1/"));
    auto table = cdat_table(t);
    ASSERT_TRUE(table);
    auto u8 = [&](std::size_t at) { return static_cast<unsigned char>((*table)[at]); };
    auto le = [&](std::size_t at, int n) {
        std::uint64_t v = 0;
        for (int i = n - 1; i >= 0; --i)
            v = (v << 8) | u8(at + static_cast<std::size_t>(i));
        return v;
    };
    // Header, DSMAS, one DSLBIS (only read latency is known), DSEMTS.
    ASSERT_EQ(table->size(), 16u + 24 * 3);
    EXPECT_EQ(le(0, 4), table->size());
    EXPECT_EQ(u8(4), 1u);
    unsigned sum = 0;
    for (std::size_t i = 0; i < table->size(); ++i)
        sum += u8(i);
    EXPECT_EQ(sum % 256, 0u);
    EXPECT_EQ(u8(16), 0u);                    // DSMAS
    EXPECT_EQ(u8(21), (1u << 5) | (1u << 3)); // dynamic capacity, shareable
    EXPECT_EQ(le(24, 8), 0u);
    EXPECT_EQ(le(32, 8), 256 * MiB);
    EXPECT_EQ(u8(40), 1u);       // DSLBIS
    EXPECT_EQ(u8(46), 1u);       // read latency
    EXPECT_EQ(le(48, 8), 1000u); // in ps
    EXPECT_EQ(le(56, 2), 350u);  // 350 ns
    EXPECT_EQ(u8(64), 4u);       // DSEMTS
    // No figure known: no table, QEMU's own stands.
    CxlTag bare = t;
    bare.host = json::object();
    EXPECT_FALSE(cdat_table(bare));
}

TEST(VmCxl, BadRangesBecomePoisonAtTheSameOffsetIn64ByteUnits) {
    json ranges = json::parse(R"([{"offset":4096,"length":512},{"offset":100,"length":10},
        {"offset":4096,"length":512},{"offset":"x","length":1},{"offset":0,"length":0},
        {"offset":1000,"length":100000},{"offset":5000}])");
    using P = std::pair<std::uint64_t, std::uint64_t>;
    EXPECT_EQ(poison_ranges(ranges, 2048 * 1024),
              (std::vector<P>{{4096, 512}, {64, 64}, {960, 100096}}));
    // Clipped to the tag; beyond it, nothing.
    EXPECT_EQ(poison_ranges(json::parse(R"([{"offset":4032,"length":4096},
        {"offset":4096,"length":1}])"),
                            4096),
              (std::vector<P>{{4032, 64}}));
    EXPECT_TRUE(poison_ranges(json::object(), 4096).empty());
}

TEST(VmCxl, DeviceIdsAreQemuIdsDerivedFromTheTag) {
    const std::string id = cxl_device_id(tag_n(7).str());
    EXPECT_EQ(id, "tagmem-" + tag_n(7).str());
    EXPECT_TRUE(std::all_of(id.begin(), id.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-';
    }));
}

} // namespace
} // namespace tagmem::vm
