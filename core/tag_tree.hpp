// SPDX-License-Identifier: Apache-2.0
// The namespace tagmemfs presents, with no FUSE in it: the root holds one
// directory per tag (named by its canonical UUID) holding `dev`, `size`,
// `shareable`, `metadata` and `data`. `data` is a symlink to <data_dir>/<tag>,
// the device node the daemon keeps for the tag (fs/node_dir.hpp says why it
// is not a device inode of the filesystem itself). apply() applies a change and says
// exactly which kernel caches must be invalidated, so the filesystem layer
// only translates those into notifications.
//
// Inode numbers: root is 1; tag directories get a slot number that is never
// reused, and each file of the tag is slot * 8 + kind. Nothing per file is
// stored, which keeps memory per tag small, and a vanished tag's numbers can
// never alias a new tag's. A tag whose device or state changes is replaced by
// a new slot: the kernel fixes a device node's rdev when it first sees the
// inode, so the old inode must die rather than change under an open().
//
// Thread safety: all methods may be called concurrently; apply() excludes
// readers only while it swaps the maps.
#pragma once

#include "result.hpp"
#include "sysfs_value.hpp"
#include "tag_record.hpp"

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tagmem {

enum class NodeKind : std::uint8_t {
    dir = 0,
    dev = 1,
    size = 2,
    shareable = 3,
    metadata = 4,
    data = 5
};
inline constexpr std::uint64_t kRootIno = 1;

struct NodeAttr {
    std::uint64_t ino = 0;
    mode_t mode = 0; // with the file type bits
    uid_t uid = 0;
    gid_t gid = 0;
    nlink_t nlink = 1;
    std::uint64_t size = 0;
    DevNumber rdev;
    timespec mtime{};
};

struct DirEntry {
    std::string_view name; // valid during the readdir callback only
    NodeAttr attr;
    std::uint64_t cookie = 0; // pass back as the offset to continue after it
};

// health: only the tag's health (core/health.hpp) changed; its files stay
// the same inodes. A change of both is `changed` followed by `health`.
// release_requested: the orchestrator asked for the tag's DCD capacity back
// (TagRecord::release_requested went from 0 to a time); it follows any
// `changed` or `health` of the same update.
enum class TagEventKind { added, removed, changed, health, release_requested };
const char* to_string(TagEventKind kind);

struct TagEvent {
    TagEventKind kind;
    Uuid tag;
    std::string device; // daxX.Y, or empty when the tag has no single device
    std::string state;
    Access access;                           // of the tag's data: who may learn of the event
    std::shared_ptr<const TagHealth> health; // as published (null: ok)
    bool release_requested = false;          // TagRecord::release_requested set
};

// What the kernel must forget after an update.
struct TreeChanges {
    struct Entry {
        std::uint64_t parent;
        std::uint64_t child;
        std::string name;
    };
    std::vector<std::pair<std::uint64_t, std::string>>
        added; // (parent, name): kill negative dentries
    std::vector<Entry> removed;
    // Files whose size or content changed, by name: the kernel may be
    // creating their inode from a reply made before the change (see
    // fs/notify.cpp), which an inode invalidation alone cannot reach.
    std::vector<Entry> refreshed;
    std::vector<std::uint64_t> changed; // directories whose attributes or listing changed
    std::vector<TagEvent> events;       // one per tag added, removed or changed

    bool empty() const {
        return added.empty() && removed.empty() && refreshed.empty() && changed.empty();
    }
};

class TagTree {
  public:
    explicit TagTree(std::string data_dir);

    Result<NodeAttr> getattr(std::uint64_t ino) const;
    Result<NodeAttr> lookup(std::uint64_t parent, std::string_view name) const;
    Result<std::string> read_link(std::uint64_t ino) const;
    // The whole content of a regular file (they are small and generated).
    Result<std::string> contents(std::uint64_t ino) const;
    // Calls fn for each entry after `offset` ("." and ".." first) until fn
    // returns false. ENOTDIR/ENOENT for a bad inode.
    Status readdir(std::uint64_t ino, std::uint64_t offset,
                   const std::function<bool(const DirEntry&)>& fn) const;

    // Publishes new or changed records and drops removed tags; only these
    // tags are looked at, so a hotplug event costs what it touches.
    //
    // A removed or replaced tag's names go at once, but its old inodes keep
    // serving their old content until retire(): until the kernel has been
    // told (TreeChanges::removed), its dentry cache still leads there, and
    // an inode that had already died would list as an empty directory
    // (readdir's ENOENT is end-of-directory to glibc) and make every file in
    // it vanish, neither the old tag nor the new one. The next apply()
    // retires them too, should the caller not have.
    TreeChanges apply(const TagDelta& delta);
    // Drops the inodes apply() removed; call once the kernel has forgotten
    // them. Returns how many tags' inodes died.
    std::size_t retire();

    std::shared_ptr<const TagRecord> find(const Uuid& tag) const;

    std::size_t tag_count() const;
    // A snapshot of the records, for the watch/wait channel and tests.
    std::vector<std::shared_ptr<const TagRecord>> records() const;

  private:
    struct TagEntry {
        TagEntry(std::uint64_t s, std::shared_ptr<const TagRecord> r, timespec t)
            : slot(s), record(std::move(r)), changed(t) {}
        // Movable for the vector (moves happen under the exclusive lock).
        TagEntry(TagEntry&& o) noexcept
            : slot(o.slot), record(std::move(o.record)),
              metadata_size(o.metadata_size.load(std::memory_order_relaxed)), retired(o.retired),
              changed(o.changed) {}
        TagEntry& operator=(TagEntry&& o) noexcept {
            slot = o.slot;
            record = std::move(o.record);
            retired = o.retired;
            metadata_size.store(o.metadata_size.load(std::memory_order_relaxed),
                                std::memory_order_relaxed);
            changed = o.changed;
            return *this;
        }
        std::uint64_t slot;
        // The directory's name is record->tag.str(): not stored, as no
        // lookup needs it (names are parsed to UUIDs instead).
        std::shared_ptr<const TagRecord> record;
        // The length of the metadata JSON, rendered on first need (0: not
        // yet): rendering every tag's JSON would dominate startup. 32 bits
        // (a few KiB in practice) leave room for `retired` in what was
        // padding: an entry stays 48 bytes.
        mutable std::atomic<std::uint32_t> metadata_size{0};
        // No name leads here any more: only inodes the kernel may still hold
        // until it is told (see apply()). Gone from the root's listing.
        bool retired = false;
        timespec changed{};
    };
    static_assert(sizeof(TagEntry) <= 48, "one per tag, for the daemon's life");

    const TagEntry* entry_of(std::uint64_t ino) const;  // caller holds the lock
    const TagEntry* entry_at(std::uint64_t slot) const; // caller holds the lock
    TagEntry* entry_at(std::uint64_t slot);
    NodeAttr attr_of(std::uint64_t slot, const TagEntry& e, NodeKind kind) const;
    NodeAttr root_attr() const;
    static bool has_kind(const TagEntry& e, NodeKind kind);
    std::size_t retire_locked(); // caller holds the lock exclusively

    mutable std::shared_mutex mutex_;
    // Sorted by slot, as slots only grow and new entries are appended:
    // readdir resumes by slot with a binary search. A vector rather than a
    // map: 48 bytes a tag instead of a 96-byte tree node.
    std::vector<TagEntry> entries_;
    std::unordered_map<Uuid, std::uint64_t> slot_of_;
    std::uint64_t next_slot_ = 1;
    std::size_t retired_count_ = 0; // entries_ with retired set
    std::string data_dir_;
    timespec root_changed_{};
};

std::string metadata_text(const TagRecord& record);

} // namespace tagmem
