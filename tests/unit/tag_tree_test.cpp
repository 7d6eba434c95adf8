// SPDX-License-Identifier: Apache-2.0
// TagTree: the namespace tagmemfs presents, without FUSE. Inode numbers,
// lookups, resumable readdir and what apply() says the kernel must forget.
#include "tag_tree.hpp"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace tagmem {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

constexpr const char* kNodes = "/run/tagmem.nodes";

Uuid tag_n(unsigned n) {
    return Uuid::parse(fmt::format("6f1c2d3e-0000-4000-8000-{:012x}", n)).value();
}

std::shared_ptr<const TagRecord> ready(unsigned n, unsigned minor, std::uint64_t size = 1 << 30) {
    auto p = std::make_shared<ProbedDevice>();
    p->dev.name = fmt::format("dax0.{}", minor);
    p->dev.id = static_cast<int>(minor);
    p->dev.region_id = 0;
    p->dev.devno = DevNumber{252, minor};
    p->dev.size = size;
    p->tag = tag_n(n);
    p->source = TagSource::dcd;
    TagRecord r;
    r.tag = tag_n(n);
    r.source = TagSource::dcd;
    r.devices = {p};
    return std::make_shared<const TagRecord>(std::move(r));
}

std::shared_ptr<const TagRecord> offered(unsigned n) {
    TagRecord r;
    r.tag = tag_n(n);
    r.state = TagState::offered;
    r.reason = "no device yet";
    return std::make_shared<const TagRecord>(std::move(r));
}

TagDelta upserts(std::vector<std::shared_ptr<const TagRecord>> rs) {
    TagDelta d;
    d.upserts = std::move(rs);
    return d;
}

TagDelta removals(std::vector<Uuid> tags) {
    TagDelta d;
    d.removals = std::move(tags);
    return d;
}

// name -> cookie of every entry of a directory, read `batch` at a time the
// way the kernel does (resuming from the last cookie).
std::vector<std::pair<std::string, std::uint64_t>>
list(const TagTree& t, std::uint64_t ino, std::uint64_t from = 0, std::size_t batch = 1000000) {
    std::vector<std::pair<std::string, std::uint64_t>> out;
    std::uint64_t offset = from;
    for (;;) {
        std::size_t got = 0;
        auto st = t.readdir(ino, offset, [&](const DirEntry& e) {
            out.emplace_back(std::string(e.name), e.cookie);
            offset = e.cookie;
            return ++got < batch;
        });
        EXPECT_TRUE(st.ok());
        if (got < batch)
            return out;
    }
}

std::vector<std::string> names_of(const std::vector<std::pair<std::string, std::uint64_t>>& v) {
    std::vector<std::string> out;
    for (const auto& [n, c] : v)
        if (n != "." && n != "..")
            out.push_back(n);
    return out;
}

TEST(TagTree, EmptyRootHasOnlyDotEntries) {
    TagTree t(kNodes);
    auto root = t.getattr(kRootIno);
    ASSERT_TRUE(root.ok());
    EXPECT_EQ(root->mode, S_IFDIR | 0555);
    EXPECT_EQ(root->nlink, 2u);
    EXPECT_THAT(names_of(list(t, kRootIno)), IsEmpty());
    EXPECT_EQ(t.tag_count(), 0u);
}

TEST(TagTree, ReadyTagHasEveryFileAndDataLinksToItsNode) {
    TagTree t(kNodes);
    auto ch = t.apply(upserts({ready(1, 7)}));
    EXPECT_THAT(ch.added, SizeIs(1));
    ASSERT_THAT(ch.events, SizeIs(1));
    EXPECT_EQ(ch.events[0].kind, TagEventKind::added);
    EXPECT_EQ(ch.events[0].device, "dax0.7");

    auto dir = t.lookup(kRootIno, tag_n(1).str());
    ASSERT_TRUE(dir.ok());
    EXPECT_EQ(dir->mode, S_IFDIR | 0555);
    EXPECT_THAT(names_of(list(t, dir->ino)),
                ElementsAre("dev", "size", "shareable", "metadata", "data"));
    auto data = t.lookup(dir->ino, "data");
    ASSERT_TRUE(data.ok());
    EXPECT_EQ(data->mode, S_IFLNK | 0777);
    EXPECT_EQ(t.read_link(data->ino).value(), std::string(kNodes) + "/" + tag_n(1).str());
    EXPECT_EQ(data->size, t.read_link(data->ino)->size());
    auto dev = t.lookup(dir->ino, "dev");
    EXPECT_EQ(t.read_link(dev->ino).value(), "/dev/dax0.7");
    auto size = t.lookup(dir->ino, "size");
    EXPECT_EQ(t.contents(size->ino).value(), "1073741824\n");
    EXPECT_EQ(size->size, t.contents(size->ino)->size());
    auto meta = t.lookup(dir->ino, "metadata");
    EXPECT_EQ(meta->size, t.contents(meta->ino)->size());
    EXPECT_EQ(t.contents(t.lookup(dir->ino, "shareable")->ino).value(), "0\n");
}

TEST(TagTree, OfferedTagHasNoDataDevOrSize) {
    TagTree t(kNodes);
    t.apply(upserts({offered(2)}));
    auto dir = t.lookup(kRootIno, tag_n(2).str());
    ASSERT_TRUE(dir.ok());
    EXPECT_THAT(names_of(list(t, dir->ino)), ElementsAre("shareable", "metadata"));
    for (const char* absent : {"data", "dev", "size"})
        EXPECT_EQ(t.lookup(dir->ino, absent).error().code, ENOENT) << absent;
    // Neither may their inode numbers be reached directly.
    EXPECT_EQ(t.getattr(dir->ino + static_cast<int>(NodeKind::data)).error().code, ENOENT);
}

TEST(TagTree, HostileLookupsAndInodesFailCleanly) {
    TagTree t(kNodes);
    t.apply(upserts({ready(1, 1)}));
    auto dir = t.lookup(kRootIno, tag_n(1).str()).value();
    // Only the canonical spelling names the directory.
    std::string upper = tag_n(1).str();
    for (auto& c : upper)
        c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    for (std::string bad :
         {upper, std::string(""), std::string("."), std::string(".."), std::string("../etc"),
          tag_n(1).str() + "x", tag_n(9).str(), std::string(4096, 'a')})
        EXPECT_EQ(t.lookup(kRootIno, bad).error().code, ENOENT) << bad;
    EXPECT_EQ(t.lookup(dir.ino, "DATA").error().code, ENOENT);
    EXPECT_EQ(t.lookup(dir.ino, "data/..").error().code, ENOENT);
    auto data = t.lookup(dir.ino, "data").value();
    EXPECT_EQ(t.lookup(data.ino, "x").error().code, ENOTDIR);
    EXPECT_EQ(t.readdir(data.ino, 0, [](const DirEntry&) { return true; }).error().code, ENOTDIR);
    for (std::uint64_t ino : {std::uint64_t{0}, std::uint64_t{2}, dir.ino + 6, dir.ino + 7,
                              dir.ino + 8 * 1000, ~std::uint64_t{0}})
        EXPECT_FALSE(t.getattr(ino).ok()) << ino;
    EXPECT_EQ(t.read_link(t.lookup(dir.ino, "size")->ino).error().code, EINVAL);
    EXPECT_EQ(t.contents(data.ino).error().code, EINVAL);
    EXPECT_EQ(t.contents(kRootIno).error().code, EISDIR);
}

TEST(TagTree, RemovalTellsTheKernelEveryNameAndTheInodesDie) {
    TagTree t(kNodes);
    t.apply(upserts({ready(1, 1), ready(2, 2)}));
    auto dir = t.lookup(kRootIno, tag_n(1).str()).value();
    auto data = t.lookup(dir.ino, "data").value();
    auto ch = t.apply(removals({tag_n(1), tag_n(99)})); // 99: unknown, ignored
    ASSERT_THAT(ch.events, SizeIs(1));
    EXPECT_EQ(ch.events[0].kind, TagEventKind::removed);
    std::set<std::string> names;
    for (const auto& r : ch.removed)
        names.insert(r.name);
    EXPECT_EQ(names, (std::set<std::string>{"dev", "size", "shareable", "metadata", "data",
                                            tag_n(1).str()}));
    EXPECT_THAT(ch.changed, ElementsAre(kRootIno));
    EXPECT_EQ(t.retire(), 1u); // the kernel has been told
    EXPECT_EQ(t.getattr(dir.ino).error().code, ENOENT);
    EXPECT_EQ(t.getattr(data.ino).error().code, ENOENT);
    EXPECT_EQ(t.lookup(kRootIno, tag_n(1).str()).error().code, ENOENT);
    EXPECT_EQ(t.find(tag_n(1)), nullptr);
    EXPECT_TRUE(t.lookup(kRootIno, tag_n(2).str()).ok());
    EXPECT_EQ(t.tag_count(), 1u);
    EXPECT_EQ(t.getattr(kRootIno)->nlink, 3u);
}

TEST(TagTree, SameRecordAgainChangesNothing) {
    TagTree t(kNodes);
    t.apply(upserts({ready(1, 1)}));
    auto ch = t.apply(upserts({ready(1, 1)}));
    EXPECT_TRUE(ch.empty());
    EXPECT_THAT(ch.events, IsEmpty());
}

// Memory errors (core/health.hpp) change the metadata, not the inodes: one
// `health` event, and a change of device as well gives both events.
TEST(TagTree, HealthChangeIsItsOwnEventOnTheSameInodes) {
    TagTree t(kNodes);
    t.apply(upserts({ready(1, 1)}));
    auto before = t.lookup(kRootIno, tag_n(1).str()).value();
    auto sick = std::make_shared<TagRecord>(*ready(1, 1));
    TagHealth h;
    h.bad.push_back({4096, 512, 1});
    sick->health = std::make_shared<const TagHealth>(h);
    auto ch = t.apply(upserts({sick}));
    ASSERT_THAT(ch.events, SizeIs(1));
    EXPECT_EQ(ch.events[0].kind, TagEventKind::health);
    ASSERT_TRUE(ch.events[0].health);
    EXPECT_TRUE(ch.events[0].health->degraded());
    EXPECT_THAT(ch.removed, IsEmpty());
    EXPECT_EQ(t.lookup(kRootIno, tag_n(1).str()).value().ino, before.ino);
    auto meta = t.lookup(before.ino, "metadata").value();
    EXPECT_NE(t.contents(meta.ino).value().find("\"degraded\""), std::string::npos);
    // Same health again: nothing.
    EXPECT_THAT(t.apply(upserts({sick})).events, IsEmpty());
    // Healthy on another device: changed, then health.
    ch = t.apply(upserts({ready(1, 2)}));
    ASSERT_THAT(ch.events, SizeIs(2));
    EXPECT_EQ(ch.events[0].kind, TagEventKind::changed);
    EXPECT_EQ(ch.events[1].kind, TagEventKind::health);
    EXPECT_FALSE(ch.events[1].health);
}

// A DCD release the orchestrator asked for (core/release_requests.hpp) is
// its own event, once, on the same inodes; the metadata says since when.
TEST(TagTree, ReleaseRequestIsItsOwnEventOnce) {
    TagTree t(kNodes);
    t.apply(upserts({ready(1, 1)}));
    auto before = t.lookup(kRootIno, tag_n(1).str()).value();
    auto asked = std::make_shared<TagRecord>(*ready(1, 1));
    asked->release_requested = 1796601600; // 2026-12-07T00:00:00Z
    auto ch = t.apply(upserts({asked}));
    ASSERT_THAT(ch.events, SizeIs(1));
    EXPECT_EQ(ch.events[0].kind, TagEventKind::release_requested);
    EXPECT_STREQ(to_string(ch.events[0].kind), "release-requested");
    EXPECT_TRUE(ch.events[0].release_requested);
    EXPECT_THAT(ch.removed, IsEmpty());
    EXPECT_EQ(t.lookup(kRootIno, tag_n(1).str()).value().ino, before.ino);
    auto meta = t.lookup(before.ino, "metadata").value();
    EXPECT_NE(t.contents(meta.ino).value().find("\"release_requested\": \"2026-12-07T00:00:00Z\""),
              std::string::npos)
        << t.contents(meta.ino).value();
    EXPECT_THAT(t.apply(upserts({asked})).events, IsEmpty());
    // Still asked back on another device: changed, and no second request.
    auto moved = std::make_shared<TagRecord>(*ready(1, 2));
    moved->release_requested = asked->release_requested;
    ch = t.apply(upserts({moved}));
    ASSERT_THAT(ch.events, SizeIs(1));
    EXPECT_EQ(ch.events[0].kind, TagEventKind::changed);
    EXPECT_TRUE(ch.events[0].release_requested);
}

TEST(TagTree, NewDeviceMeansNewInodesNeverReusedNumbers) {
    // The kernel fixes a node's identity when it first sees the inode: a
    // tag that moved to another device must get new inode numbers.
    TagTree t(kNodes);
    t.apply(upserts({ready(1, 1)}));
    auto before = t.lookup(kRootIno, tag_n(1).str()).value();
    auto ch = t.apply(upserts({ready(1, 2)}));
    ASSERT_THAT(ch.events, SizeIs(1));
    EXPECT_EQ(ch.events[0].kind, TagEventKind::changed);
    EXPECT_THAT(ch.removed, SizeIs(6));
    EXPECT_THAT(ch.added, SizeIs(1));
    auto after = t.lookup(kRootIno, tag_n(1).str()).value();
    EXPECT_GT(after.ino, before.ino);
    t.retire();
    EXPECT_EQ(t.getattr(before.ino).error().code, ENOENT);
    EXPECT_EQ(t.read_link(t.lookup(after.ino, "dev")->ino).value(), "/dev/dax0.2");
}

// The flake of test_events_for_vanished_or_bogus_devices_change_nothing:
// between apply() and the notifications, the kernel still resolves the tag's
// name to its old directory. That directory must still be the old tag, whole:
// a dead one lists empty (readdir's ENOENT is end-of-directory to glibc) and
// says `data` is gone although the new directory is not yet reachable.
TEST(TagTree, ReplacedTagStaysWholeUntilRetired) {
    TagTree t(kNodes);
    t.apply(upserts({ready(1, 1), ready(2, 2)}));
    auto old_dir = t.lookup(kRootIno, tag_n(1).str()).value();
    auto ch = t.apply(upserts({offered(1)})); // its device went away
    EXPECT_THAT(ch.removed, SizeIs(6));
    // By name: only the new directory, listed once.
    auto new_dir = t.lookup(kRootIno, tag_n(1).str()).value();
    EXPECT_GT(new_dir.ino, old_dir.ino);
    EXPECT_THAT(names_of(list(t, new_dir.ino)), ElementsAre("shareable", "metadata"));
    EXPECT_THAT(names_of(list(t, kRootIno)), UnorderedElementsAre(tag_n(1).str(), tag_n(2).str()));
    EXPECT_EQ(t.tag_count(), 2u);
    EXPECT_EQ(t.getattr(kRootIno)->nlink, 4u);
    EXPECT_THAT(t.records(), SizeIs(2));
    // By the inode the kernel still holds: the old tag, as it was.
    EXPECT_THAT(names_of(list(t, old_dir.ino)),
                ElementsAre("dev", "size", "shareable", "metadata", "data"));
    auto old_data = t.lookup(old_dir.ino, "data");
    ASSERT_TRUE(old_data.ok());
    EXPECT_EQ(t.read_link(old_data->ino).value(), std::string(kNodes) + "/" + tag_n(1).str());
    EXPECT_TRUE(t.getattr(old_dir.ino).ok());
    // Told: the old inodes die; the new ones live on.
    EXPECT_EQ(t.retire(), 1u);
    EXPECT_EQ(t.retire(), 0u);
    EXPECT_EQ(t.getattr(old_dir.ino).error().code, ENOENT);
    EXPECT_EQ(t.lookup(old_dir.ino, "data").error().code, ENOENT);
    EXPECT_EQ(t.readdir(old_dir.ino, 0, [](const DirEntry&) { return true; }).error().code, ENOENT);
    EXPECT_THAT(names_of(list(t, new_dir.ino)), ElementsAre("shareable", "metadata"));
    EXPECT_EQ(t.getattr(kRootIno)->nlink, 4u);
}

TEST(TagTree, RemovedTagsInodesDieAtTheNextApplyIfNotRetired) {
    TagTree t(kNodes);
    t.apply(upserts({ready(1, 1)}));
    auto dir = t.lookup(kRootIno, tag_n(1).str()).value();
    t.apply(removals({tag_n(1)}));
    EXPECT_TRUE(t.getattr(dir.ino).ok()); // not yet told
    EXPECT_THAT(names_of(list(t, kRootIno)), IsEmpty());
    EXPECT_EQ(t.tag_count(), 0u);
    t.apply(upserts({ready(2, 2)}));
    EXPECT_EQ(t.getattr(dir.ino).error().code, ENOENT);
    EXPECT_EQ(t.retire(), 0u);
}

TEST(TagTree, SameDeviceNewFactsUpdatesInPlace) {
    TagTree t(kNodes);
    t.apply(upserts({ready(1, 1, 1 << 30)}));
    auto dir = t.lookup(kRootIno, tag_n(1).str()).value();
    auto size = t.lookup(dir.ino, "size").value();
    auto meta_before = t.lookup(dir.ino, "metadata")->size;
    auto ch = t.apply(upserts({ready(1, 1, 3ull << 30)}));
    EXPECT_THAT(ch.removed, IsEmpty());
    // Changed files are named with their directory: fs/notify.cpp needs the
    // name for the barrier that closes the LOOKUP race.
    ASSERT_FALSE(ch.refreshed.empty());
    EXPECT_TRUE(std::any_of(ch.refreshed.begin(), ch.refreshed.end(), [&](const auto& f) {
        return f.child == size.ino && f.parent == dir.ino && f.name == "size";
    }));
    EXPECT_THAT(ch.changed, ::testing::Contains(dir.ino));
    for (const auto& f : ch.refreshed)
        EXPECT_EQ(t.lookup(f.parent, f.name)->ino, f.child) << f.name;
    EXPECT_EQ(t.lookup(kRootIno, tag_n(1).str())->ino, dir.ino);
    EXPECT_EQ(t.contents(size.ino).value(), "3221225472\n");
    // The metadata length is computed again, not the stale one.
    EXPECT_EQ(t.lookup(dir.ino, "metadata")->size, t.contents(dir.ino + 4)->size());
    EXPECT_NE(t.lookup(dir.ino, "metadata")->size, 0u);
    (void)meta_before;
}

TEST(TagTree, ReaddirResumesByCookieWhileTagsComeAndGo) {
    TagTree t(kNodes);
    std::vector<std::shared_ptr<const TagRecord>> rs;
    for (unsigned i = 1; i <= 100; ++i)
        rs.push_back(ready(i, i));
    t.apply(upserts(rs));
    auto full = list(t, kRootIno, 0, 7);
    ASSERT_THAT(names_of(full), SizeIs(100));
    // Stop after 40 entries; remove some listed and some not yet listed tags,
    // add new ones; resuming must list each survivor not yet seen exactly once.
    std::uint64_t cookie = full[2 + 39].second;
    std::vector<Uuid> gone;
    for (unsigned i : {5u, 10u, 41u, 42u, 77u, 100u})
        gone.push_back(tag_n(i));
    t.apply(removals(gone));
    t.apply(upserts({ready(200, 200), ready(201, 201)}));
    auto rest = names_of(list(t, kRootIno, cookie, 3));
    std::vector<std::string> want;
    for (unsigned i = 41; i <= 100; ++i)
        if (i != 41 && i != 42 && i != 77 && i != 100)
            want.push_back(tag_n(i).str());
    want.push_back(tag_n(200).str());
    want.push_back(tag_n(201).str());
    EXPECT_EQ(rest, want);
    EXPECT_EQ(t.tag_count(), 96u);
}

TEST(TagTree, ManyTagsStayConsistentThroughChurn) {
    // Entries live in a vector sorted by slot; removal compacts it. Every
    // surviving tag must still resolve to its own record after churn.
    TagTree t(kNodes);
    std::vector<std::shared_ptr<const TagRecord>> rs;
    for (unsigned i = 0; i < 5000; ++i)
        rs.push_back(ready(i, i));
    t.apply(upserts(rs));
    std::set<unsigned> live;
    for (unsigned i = 0; i < 5000; ++i)
        live.insert(i);
    for (unsigned round = 0; round < 20; ++round) {
        std::vector<Uuid> gone;
        for (unsigned i = round; i < 5000; i += 37)
            if (live.erase(i))
                gone.push_back(tag_n(i));
        TagDelta d = removals(gone);
        d.upserts.push_back(ready(10000 + round, 10000 + round));
        live.insert(10000 + round);
        d.upserts.push_back(ready((round * 101) % 5000, 20000 + round)); // moved or re-added
        live.insert((round * 101) % 5000);
        t.apply(d);
    }
    EXPECT_EQ(t.tag_count(), live.size());
    std::set<std::string> listed;
    for (const auto& n : names_of(list(t, kRootIno, 0, 100)))
        EXPECT_TRUE(listed.insert(n).second) << "listed twice: " << n;
    EXPECT_EQ(listed.size(), live.size());
    for (unsigned i : live) {
        auto dir = t.lookup(kRootIno, tag_n(i).str());
        ASSERT_TRUE(dir.ok()) << i;
        auto rec = t.find(tag_n(i));
        ASSERT_NE(rec, nullptr);
        EXPECT_EQ(rec->tag, tag_n(i));
        auto dev = t.read_link(t.lookup(dir->ino, "dev")->ino);
        EXPECT_EQ(dev.value(), "/dev/" + rec->device()->dev.name);
    }
    EXPECT_EQ(t.records().size(), live.size());
}

} // namespace
} // namespace tagmem
