// SPDX-License-Identifier: Apache-2.0
// The CDI spec of the usable tags (core/cdi.hpp): names, what a device holds,
// which tags appear, and when the daemon must rewrite it.
#include "cdi.hpp"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cctype>
#include <set>
#include <string>

namespace tagmem {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;

Uuid tag_n(unsigned n) {
    return Uuid::parse(fmt::format("6f1c2d3e-0000-4000-8000-{:012x}", n)).value();
}

std::shared_ptr<const TagRecord> record(unsigned n, TagState state = TagState::ready,
                                        std::string name = "", Access access = {}) {
    auto p = std::make_shared<ProbedDevice>();
    p->dev.name = fmt::format("dax0.{}", n);
    p->dev.devno = DevNumber{252, n};
    p->tag = tag_n(n);
    TagRecord r;
    r.tag = tag_n(n);
    r.name = Interned(name);
    r.state = state;
    r.access = access;
    if (state != TagState::offered)
        r.devices = {p};
    return std::make_shared<const TagRecord>(std::move(r));
}

TagDelta upsert(std::shared_ptr<const TagRecord> r) {
    TagDelta d;
    d.upserts.push_back(std::move(r));
    return d;
}

// The spec as JSON (it is made as text), or null when there is none.
json spec_of(const CdiDevices& devices, const CdiPaths& paths = {}) {
    auto text = cdi_spec(devices, paths);
    return text ? json::parse(*text) : json();
}

std::vector<std::string> names(const json& spec) {
    std::vector<std::string> out;
    for (const auto& d : spec["devices"])
        out.push_back(d["name"]);
    return out;
}

TEST(CdiName, FollowsTheCdiRule) {
    for (const char* ok : {"a", "7", "scratch-pool", "pool_1", "a.b:c", "6f1c2d3e-0000-4000"})
        EXPECT_TRUE(is_cdi_device_name(ok)) << ok;
    for (const char* bad : {"", "-a", "a-", "_a", "a b", "a/b", "a=b", "pool\"", "é", ".a", "a:"})
        EXPECT_FALSE(is_cdi_device_name(bad)) << bad;
}

TEST(CdiSpec, OneDevicePerUsableTagWithExactlyItsPieces) {
    CdiSet set;
    Access famfs{.uid = 1234, .gid = 99, .mode = 0640, .owner = "famfs", .group = "g"};
    ASSERT_FALSE(set.apply(upsert(record(1, TagState::ready, "", famfs))).empty());
    json spec = spec_of(set.devices(), CdiPaths{"/run/tagmem", ""});
    ASSERT_FALSE(spec.is_null());
    EXPECT_EQ(spec["cdiVersion"], "0.5.0");
    EXPECT_EQ(spec["kind"], "tagmem.io/tag");
    ASSERT_EQ(spec["devices"].size(), 1u);
    const std::string tag = tag_n(1).str();
    const json& d = spec["devices"][0];
    EXPECT_EQ(d["name"], tag);
    const json& e = d["containerEdits"];
    ASSERT_EQ(e["deviceNodes"].size(), 2u);
    EXPECT_EQ(e["deviceNodes"][0]["path"], "/run/tagmem.nodes/" + tag);
    EXPECT_EQ(e["deviceNodes"][1]["path"], "/dev/dax0.1");
    for (const auto& n : e["deviceNodes"]) {
        EXPECT_EQ(n["type"], "c");
        EXPECT_EQ(n["major"], 252);
        EXPECT_EQ(n["minor"], 1);
        EXPECT_EQ(n["uid"], 1234);
        EXPECT_EQ(n["gid"], 99);
        EXPECT_EQ(n["fileMode"], 0640);
        EXPECT_EQ(n["permissions"], "rw");    // no "m": nobody needs mknod of it
        EXPECT_FALSE(n.contains("hostPath")); // runc makes the node from the numbers
    }
    ASSERT_EQ(e["mounts"].size(), 1u);
    EXPECT_EQ(e["mounts"][0]["hostPath"], "/run/tagmem/" + tag);
    EXPECT_EQ(e["mounts"][0]["containerPath"], "/run/tagmem/" + tag);
    EXPECT_EQ(e["mounts"][0]["options"], json({"bind", "ro", "nosuid", "nodev"}));
    EXPECT_EQ(e["env"], json({"TAGMEM_TAG=" + tag, "TAGMEM_DIR=/run/tagmem/" + tag,
                              "TAGMEM_DATA=/run/tagmem/" + tag + "/data"}));
}

TEST(CdiSpec, PathsFollowTheMountAndNodesDirectory) {
    CdiSet set;
    set.apply(upsert(record(2)));
    const std::string tag = tag_n(2).str();
    auto e = (spec_of(set.devices(), CdiPaths{"/srv/tm", ""}))["devices"][0]["containerEdits"];
    EXPECT_EQ(e["deviceNodes"][0]["path"], "/srv/tm.nodes/" + tag);
    EXPECT_EQ(e["mounts"][0]["hostPath"], "/srv/tm/" + tag);
    e = (spec_of(set.devices(), CdiPaths{"/srv/tm", "/n"}))["devices"][0]["containerEdits"];
    EXPECT_EQ(e["deviceNodes"][0]["path"], "/n/" + tag);
}

TEST(CdiSpec, OnlyUsableTags) {
    CdiSet set;
    for (auto state :
         {TagState::system_ram, TagState::disabled, TagState::conflict, TagState::offered})
        EXPECT_TRUE(set.apply(upsert(record(3, state))).empty());
    EXPECT_FALSE(cdi_spec(set.devices(), {})); // CDI refuses a spec without devices
    EXPECT_FALSE(set.apply(upsert(record(3))).empty());
    EXPECT_FALSE(set.apply(upsert(record(4))).empty());
    EXPECT_THAT(names(spec_of(set.devices(), {})), ElementsAre(tag_n(3).str(), tag_n(4).str()));
    // A tag that becomes unusable leaves the spec; so does one that is gone.
    EXPECT_FALSE(set.apply(upsert(record(3, TagState::system_ram))).empty());
    EXPECT_THAT(names(spec_of(set.devices(), {})), ElementsAre(tag_n(4).str()));
    TagDelta gone;
    gone.removals = {tag_n(4)};
    EXPECT_FALSE(set.apply(gone).empty());
    EXPECT_FALSE(cdi_spec(set.devices(), {}));
    EXPECT_TRUE(set.apply(gone).empty());
}

TEST(CdiSpec, ChangesOnlyWhenWhatItHoldsChanges) {
    CdiSet set;
    ASSERT_FALSE(set.apply(upsert(record(5))).empty());
    EXPECT_TRUE(set.apply(upsert(record(5))).empty()); // same again (e.g. its size changed)
    EXPECT_FALSE(set.apply(upsert(record(5, TagState::ready, "pool"))).empty());
    EXPECT_FALSE(
        set.apply(upsert(record(5, TagState::ready, "pool", Access{.mode = 0660}))).empty());
    EXPECT_TRUE(
        set.apply(upsert(record(5, TagState::ready, "pool", Access{.mode = 0660}))).empty());
}

TEST(CdiSpec, ConfiguredNamesWhereCdiAllowsAndUnambiguous) {
    CdiSet set;
    set.apply(upsert(record(6, TagState::ready, "scratch-pool")));
    set.apply(upsert(record(7, TagState::ready, "has space")));
    set.apply(upsert(record(8, TagState::ready, "twin")));
    set.apply(upsert(record(9, TagState::ready, "twin")));
    set.apply(upsert(record(10, TagState::ready, tag_n(11).str()))); // looks like a tag
    set.apply(upsert(record(11)));
    json spec = spec_of(set.devices());
    EXPECT_THAT(names(spec),
                ElementsAre("scratch-pool", tag_n(6).str(), tag_n(7).str(), tag_n(8).str(),
                            tag_n(9).str(), tag_n(10).str(), tag_n(11).str()));
    // The name's device is the tag's device.
    EXPECT_EQ(spec["devices"][0]["containerEdits"], spec["devices"][1]["containerEdits"]);
}

TEST(CdiSpec, NamesAreEscapedAsJson) {
    // A configured name never reaches the spec unless CDI allows it, and the
    // env values are JSON strings: a quote cannot break the document.
    CdiSet set;
    set.apply(upsert(record(12, TagState::ready, "a\"b")));
    json back = spec_of(set.devices(), CdiPaths{"/run/tag\"mem", ""});
    EXPECT_THAT(names(back), ElementsAre(tag_n(12).str()));
    EXPECT_EQ(back["devices"][0]["containerEdits"]["mounts"][0]["hostPath"],
              "/run/tag\"mem/" + tag_n(12).str());
}

TEST(CdiSpec, BytesThatAreNotUtf8DoNotBreakIt) {
    CdiSet set;
    set.apply(upsert(record(13)));
    json back = spec_of(set.devices(), CdiPaths{"/run/\xff", ""});
    EXPECT_EQ(back["devices"][0]["containerEdits"]["mounts"][0]["hostPath"],
              "/run/\xef\xbf\xbd/" + tag_n(13).str());
}

// Per-tag files: a change names only the tags whose own file changes.
TEST(CdiSet, ChangedTagsAreOnlyThoseWhoseFileChanges) {
    CdiSet set;
    EXPECT_THAT(set.apply(upsert(record(20))), ElementsAre(tag_n(20)));
    EXPECT_THAT(set.apply(upsert(record(21))), ElementsAre(tag_n(21)));
    EXPECT_THAT(set.apply(upsert(record(21, TagState::ready, "", Access{.mode = 0640}))),
                ElementsAre(tag_n(21)));
    EXPECT_THAT(set.apply(upsert(record(21, TagState::disabled))), ElementsAre(tag_n(21)));
    TagDelta gone;
    gone.removals = {tag_n(20), tag_n(22)}; // 22 never was
    EXPECT_THAT(set.apply(gone), ElementsAre(tag_n(20)));
}

TEST(CdiSet, ANameThatBecomesSharedOrUnsharedChangesBothFiles) {
    CdiSet set;
    set.apply(upsert(record(23, TagState::ready, "pool")));
    EXPECT_TRUE(set.has_alias(tag_n(23)));
    // A second tag named "pool": both lose the alias, both files change.
    EXPECT_THAT(set.apply(upsert(record(24, TagState::ready, "pool"))),
                ElementsAre(tag_n(23), tag_n(24)));
    EXPECT_FALSE(set.has_alias(tag_n(23)));
    EXPECT_FALSE(set.has_alias(tag_n(24)));
    // A third: only its own file (the others had no alias already).
    EXPECT_THAT(set.apply(upsert(record(25, TagState::ready, "pool"))), ElementsAre(tag_n(25)));
    set.apply(upsert(record(25, TagState::disabled)));
    // Renamed away: the one left with "pool" gains the alias.
    EXPECT_THAT(set.apply(upsert(record(24, TagState::ready, "other"))),
                ElementsAre(tag_n(23), tag_n(24)));
    EXPECT_TRUE(set.has_alias(tag_n(23)));
    EXPECT_TRUE(set.has_alias(tag_n(24)));
    // Unusable: its name is free again, for no one.
    EXPECT_THAT(set.apply(upsert(record(24, TagState::system_ram))), ElementsAre(tag_n(24)));
}

TEST(CdiSet, ATagsFileHoldsItsDevicesAsTheCombinedSpecDoes) {
    CdiSet set;
    set.apply(upsert(record(26, TagState::ready, "scratch")));
    set.apply(upsert(record(27, TagState::ready, "twin")));
    set.apply(upsert(record(28, TagState::ready, "twin")));
    EXPECT_FALSE(set.spec_of(tag_n(29), {}));
    json combined = spec_of(set.devices());
    std::vector<json> merged;
    for (unsigned n : {26, 27, 28}) {
        json one = json::parse(set.spec_of(tag_n(n), {}).value());
        EXPECT_EQ(one["cdiVersion"], "0.5.0");
        EXPECT_EQ(one["kind"], "tagmem.io/tag");
        for (const auto& d : one["devices"])
            merged.push_back(d);
    }
    // Merged, the per-tag files offer exactly the devices of the one spec.
    EXPECT_EQ(json(merged), combined["devices"]);
}

// A container keeps the device rule and node of the number it was started
// with; the kernel gives a freed dax minor to the next device at once. So a
// tag's CDI names are revoked, with that number, whenever the tag stops
// being usable or its number changes, and at no other change.
TEST(CdiSet, RevokesANamesDeviceNumberWhenTheTagLosesIt) {
    CdiSet set;
    set.apply(upsert(record(1, TagState::ready, "pool")));
    set.apply(upsert(record(2)));
    // Owner, mode: the number stays the tag's; nothing revoked.
    EXPECT_TRUE(set.revoked_by(upsert(record(1, TagState::ready, "pool", {.mode = 0640}))).empty());
    // Gone: both names, and the number the containers hold.
    TagDelta gone;
    gone.removals.push_back(tag_n(1));
    auto r = set.revoked_by(gone);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].tag, tag_n(1));
    EXPECT_THAT(r[0].names, ElementsAre("tagmem.io/tag=" + tag_n(1).str(), "tagmem.io/tag=pool"));
    EXPECT_EQ(r[0].devno, (DevNumber{252, 1}));
    // No longer usable (disabled, conflict...): revoked as well.
    r = set.revoked_by(upsert(record(2, TagState::disabled)));
    ASSERT_EQ(r.size(), 1u);
    EXPECT_THAT(r[0].names, ElementsAre("tagmem.io/tag=" + tag_n(2).str()));
    // Another device number for the tag (the device was made anew): the old
    // number is revoked, the new one is in the spec.
    auto moved = std::make_shared<TagRecord>(*record(2));
    auto dev = std::make_shared<ProbedDevice>(*moved->devices[0]);
    dev->dev.devno = DevNumber{252, 7};
    moved->devices = {dev};
    r = set.revoked_by(upsert(moved));
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].devno, (DevNumber{252, 2}));
    // A tag that had no CDI device revokes nothing.
    EXPECT_TRUE(set.revoked_by(upsert(record(3, TagState::disabled))).empty());
}

TEST(CdiFileName, OnlyTagmemfsOwnPattern) {
    const Uuid t = tag_n(30);
    EXPECT_EQ(cdi_file_name(t), "tagmem-" + t.str() + ".json");
    EXPECT_EQ(cdi_file_tag(cdi_file_name(t)), t);
    for (const std::string& other : std::vector<std::string>{
             "tagmem.json", "tagmem-.json", "tagmem-" + t.str(), "tagmem-" + t.str() + ".yaml",
             "x-" + t.str() + ".json", "tagmem-" + t.str() + ".json.tmp", ".tagmem.json.tmp"})
        EXPECT_FALSE(cdi_file_tag(other)) << other;
    std::string upper = t.str();
    for (auto& c : upper)
        c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    EXPECT_FALSE(cdi_file_tag("tagmem-" + upper + ".json")); // not a spelling it writes
}

} // namespace
} // namespace tagmem
