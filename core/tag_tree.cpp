// SPDX-License-Identifier: Apache-2.0
#include "tag_tree.hpp"

#include "json_output.hpp"

#include <fmt/format.h>

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <mutex>
#include <utility>

namespace tagmem {
namespace {

constexpr std::uint64_t kKindsPerSlot = 8;
constexpr std::array<NodeKind, 5> kFileKinds = {NodeKind::dev, NodeKind::size, NodeKind::shareable,
                                                NodeKind::metadata, NodeKind::data};

std::string_view kind_name(NodeKind kind) {
    switch (kind) {
    case NodeKind::dev: return "dev";
    case NodeKind::size: return "size";
    case NodeKind::shareable: return "shareable";
    case NodeKind::metadata: return "metadata";
    case NodeKind::data: return "data";
    case NodeKind::dir: break;
    }
    return {};
}

std::optional<NodeKind> kind_by_name(std::string_view name) {
    for (auto k : kFileKinds)
        if (kind_name(k) == name)
            return k;
    return std::nullopt;
}

std::uint64_t ino_of(std::uint64_t slot, NodeKind kind) {
    return slot * kKindsPerSlot + static_cast<std::uint64_t>(kind);
}

timespec now() {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts;
}

// Two records with the same identity can be updated in place; otherwise the
// tag's inodes are replaced (see the header).
std::string identity(const TagRecord& r) {
    std::string id = to_string(r.state);
    for (const auto& d : r.devices)
        id += fmt::format(" {}={}:{}", d->dev.name, d->dev.devno.major, d->dev.devno.minor);
    return id;
}

std::string single_device(const TagRecord& r) {
    const auto* d = r.device();
    return d ? d->dev.name : std::string();
}

} // namespace

const char* to_string(TagEventKind kind) {
    switch (kind) {
    case TagEventKind::added: return "added";
    case TagEventKind::removed: return "removed";
    case TagEventKind::changed: return "changed";
    case TagEventKind::health: return "health";
    case TagEventKind::release_requested: return "release-requested";
    }
    return "unknown";
}

std::string metadata_text(const TagRecord& record) {
    return tag_to_json(record, /*privileged=*/false).dump(2) + "\n"; // world-readable
}

TagTree::TagTree(std::string data_dir) : data_dir_(std::move(data_dir)), root_changed_(now()) {}

bool TagTree::has_kind(const TagEntry& e, NodeKind kind) {
    switch (kind) {
    case NodeKind::dir:
    case NodeKind::metadata:
    case NodeKind::shareable: return true;
    case NodeKind::size: return e.record->device() != nullptr;
    case NodeKind::dev:
    case NodeKind::data: return e.record->usable();
    }
    return false;
}

const TagTree::TagEntry* TagTree::entry_at(std::uint64_t slot) const {
    auto it = std::lower_bound(entries_.begin(), entries_.end(), slot,
                               [](const TagEntry& e, std::uint64_t s) { return e.slot < s; });
    return it != entries_.end() && it->slot == slot && it->record ? &*it : nullptr;
}

TagTree::TagEntry* TagTree::entry_at(std::uint64_t slot) {
    return const_cast<TagEntry*>(std::as_const(*this).entry_at(slot));
}

const TagTree::TagEntry* TagTree::entry_of(std::uint64_t ino) const {
    const TagEntry* e = entry_at(ino / kKindsPerSlot);
    if (!e || ino % kKindsPerSlot > static_cast<std::uint64_t>(NodeKind::data) ||
        !has_kind(*e, static_cast<NodeKind>(ino % kKindsPerSlot)))
        return nullptr;
    return e;
}

NodeAttr TagTree::root_attr() const {
    NodeAttr a;
    a.ino = kRootIno;
    a.mode = S_IFDIR | 0555;
    a.nlink = 2 + entries_.size() - retired_count_;
    a.mtime = root_changed_;
    return a;
}

NodeAttr TagTree::attr_of(std::uint64_t slot, const TagEntry& e, NodeKind kind) const {
    NodeAttr a;
    a.ino = ino_of(slot, kind);
    a.mtime = e.changed;
    const TagRecord& r = *e.record;
    switch (kind) {
    case NodeKind::dir:
        a.mode = S_IFDIR | 0555;
        a.nlink = 2;
        break;
    case NodeKind::dev:
        a.mode = S_IFLNK | 0777;
        a.size = r.device()->dev.dev_path().size();
        break;
    case NodeKind::size:
        a.mode = S_IFREG | 0444;
        a.size = fmt::formatted_size("{}\n", r.device()->dev.size);
        break;
    case NodeKind::shareable:
        a.mode = S_IFREG | 0444;
        a.size = 2;
        break;
    case NodeKind::metadata: {
        a.mode = S_IFREG | 0444;
        std::uint64_t size = e.metadata_size.load(std::memory_order_relaxed);
        if (size == 0) {
            size = metadata_text(r).size();
            e.metadata_size.store(static_cast<std::uint32_t>(size), std::memory_order_relaxed);
        }
        a.size = size;
        break;
    }
    case NodeKind::data:
        // To the device node; its owner and mode (root 0600 unless
        // configured) decide who may map the memory.
        a.mode = S_IFLNK | 0777;
        a.size = data_dir_.size() + 1 + 36;
        break;
    }
    return a;
}

Result<NodeAttr> TagTree::getattr(std::uint64_t ino) const {
    std::shared_lock lock(mutex_);
    if (ino == kRootIno)
        return root_attr();
    const TagEntry* e = entry_of(ino);
    if (!e)
        return make_error(ENOENT, fmt::format("no inode {}", ino));
    return attr_of(ino / kKindsPerSlot, *e, static_cast<NodeKind>(ino % kKindsPerSlot));
}

Result<NodeAttr> TagTree::lookup(std::uint64_t parent, std::string_view name) const {
    std::shared_lock lock(mutex_);
    if (parent == kRootIno) {
        auto tag = Uuid::parse(name);
        // Only the canonical lower-case spelling names a directory, so that
        // one tag never appears under two names in the dentry cache.
        if (!tag || tag->str() != name)
            return make_error(ENOENT, "no such tag");
        auto it = slot_of_.find(*tag);
        if (it == slot_of_.end())
            return make_error(ENOENT, "no such tag");
        const TagEntry* e = entry_at(it->second);
        if (!e)
            return make_error(ENOENT, "no such tag");
        return attr_of(it->second, *e, NodeKind::dir);
    }
    if (parent % kKindsPerSlot != static_cast<std::uint64_t>(NodeKind::dir))
        return make_error(ENOTDIR, "not a directory");
    const TagEntry* e = entry_of(parent);
    if (!e)
        return make_error(ENOENT, "directory vanished");
    auto kind = kind_by_name(name);
    if (!kind || !has_kind(*e, *kind))
        return make_error(ENOENT, "no such file");
    return attr_of(parent / kKindsPerSlot, *e, *kind);
}

Result<std::string> TagTree::read_link(std::uint64_t ino) const {
    std::shared_lock lock(mutex_);
    const TagEntry* e = entry_of(ino);
    if (!e)
        return make_error(ENOENT, "no such link");
    switch (static_cast<NodeKind>(ino % kKindsPerSlot)) {
    case NodeKind::dev: return e->record->device()->dev.dev_path();
    case NodeKind::data: return data_dir_ + "/" + e->record->tag.str();
    default: return make_error(EINVAL, "not a symlink");
    }
}

Result<std::string> TagTree::contents(std::uint64_t ino) const {
    std::shared_lock lock(mutex_);
    if (ino == kRootIno)
        return make_error(EISDIR, "a directory");
    const TagEntry* e = entry_of(ino);
    if (!e)
        return make_error(ENOENT, "no such file");
    const TagRecord& r = *e->record;
    switch (static_cast<NodeKind>(ino % kKindsPerSlot)) {
    case NodeKind::size: return fmt::format("{}\n", r.device()->dev.size);
    case NodeKind::shareable: return std::string(r.shareable ? "1\n" : "0\n");
    case NodeKind::metadata: return metadata_text(r);
    case NodeKind::dir: return make_error(EISDIR, "a directory");
    case NodeKind::dev:
    case NodeKind::data: break;
    }
    return make_error(EINVAL, "not a regular file");
}

Status TagTree::readdir(std::uint64_t ino, std::uint64_t offset,
                        const std::function<bool(const DirEntry&)>& fn) const {
    std::shared_lock lock(mutex_);
    // Cookies: 1 after ".", 2 after "..", then the inode number of the entry
    // just listed (always > 2), which stays valid while entries come and go.
    const TagEntry* dir = nullptr;
    NodeAttr self;
    if (ino == kRootIno) {
        self = root_attr();
    } else {
        if (ino % kKindsPerSlot != static_cast<std::uint64_t>(NodeKind::dir))
            return make_error(ENOTDIR, "not a directory");
        dir = entry_of(ino);
        if (!dir)
            return make_error(ENOENT, "directory vanished");
        self = attr_of(ino / kKindsPerSlot, *dir, NodeKind::dir);
    }
    if (offset < 1 && !fn(DirEntry{".", self, 1}))
        return Ok{};
    if (offset < 2 && !fn(DirEntry{"..", root_attr(), 2}))
        return Ok{};
    if (ino == kRootIno) {
        auto it = std::upper_bound(entries_.begin(), entries_.end(), offset / kKindsPerSlot,
                                   [](std::uint64_t s, const TagEntry& e) { return s < e.slot; });
        for (; it != entries_.end(); ++it) {
            if (it->retired)
                continue; // its name now leads to its successor, or nowhere
            NodeAttr a = attr_of(it->slot, *it, NodeKind::dir);
            if (a.ino <= offset)
                continue;
            const std::string name = it->record->tag.str();
            if (!fn(DirEntry{name, a, a.ino}))
                break;
        }
        return Ok{};
    }
    std::uint64_t slot = ino / kKindsPerSlot;
    for (auto kind : kFileKinds) {
        if (!has_kind(*dir, kind))
            continue;
        NodeAttr a = attr_of(slot, *dir, kind);
        if (a.ino <= offset)
            continue;
        if (!fn(DirEntry{kind_name(kind), a, a.ino}))
            break;
    }
    return Ok{};
}

TreeChanges TagTree::apply(const TagDelta& delta) {
    TreeChanges ch;
    const timespec t = now();
    std::unique_lock lock(mutex_);
    // The previous apply()'s caller has told the kernel by now.
    retire_locked();
    auto event = [&](TagEventKind kind, const TagRecord& r) {
        ch.events.push_back({kind, r.tag, single_device(r), to_string(r.state), r.access, r.health,
                             r.release_requested != 0});
    };
    auto remove_slot = [&](std::uint64_t slot) {
        TagEntry& e = *entry_at(slot);
        std::uint64_t dir = ino_of(slot, NodeKind::dir);
        for (auto kind : kFileKinds)
            if (has_kind(e, kind))
                ch.removed.push_back({dir, ino_of(slot, kind), std::string(kind_name(kind))});
        ch.removed.push_back({kRootIno, dir, e.record->tag.str()});
        // Kept, with its record, until retire(): see the header.
        e.retired = true;
        ++retired_count_;
    };
    auto add_slot = [&](const std::shared_ptr<const TagRecord>& record) {
        std::uint64_t slot = next_slot_++;
        // Grow by an eighth, not double: slack is memory held for good.
        if (entries_.size() == entries_.capacity())
            entries_.reserve(entries_.size() + entries_.size() / 8 + 16);
        entries_.emplace_back(slot, record, t); // slots only grow: still sorted
        ch.added.emplace_back(kRootIno, record->tag.str());
        slot_of_[record->tag] = slot;
    };

    for (const auto& tag : delta.removals) {
        auto it = slot_of_.find(tag);
        if (it == slot_of_.end())
            continue;
        event(TagEventKind::removed, *entry_at(it->second)->record);
        remove_slot(it->second);
        slot_of_.erase(it);
    }
    for (const auto& record : delta.upserts) {
        const TagRecord& r = *record;
        auto old = slot_of_.find(r.tag);
        if (old == slot_of_.end()) {
            add_slot(record);
            event(TagEventKind::added, r);
            continue;
        }
        TagEntry& e = *entry_at(old->second);
        if (*e.record == r)
            continue;                   // re-read, unchanged
        TagRecord old_rest = *e.record; // all but the health and the release mark
        old_rest.health = r.health;
        old_rest.release_requested = r.release_requested;
        TagRecord old_health = *e.record;
        old_health.release_requested = r.release_requested;
        const bool health_changed = !(old_health == old_rest);
        if (!(old_rest == r))
            event(TagEventKind::changed, r);
        if (health_changed)
            event(TagEventKind::health, r);
        if (r.release_requested != 0 && e.record->release_requested == 0)
            event(TagEventKind::release_requested, r);
        if (identity(*e.record) != identity(r)) {
            remove_slot(old->second);
            add_slot(record);
            continue;
        }
        e.record = record;
        e.metadata_size = 0;
        e.changed = t;
        const std::uint64_t dir = ino_of(old->second, NodeKind::dir);
        ch.changed.push_back(dir);
        for (auto kind : kFileKinds)
            if (has_kind(e, kind))
                ch.refreshed.push_back(
                    {dir, ino_of(old->second, kind), std::string(kind_name(kind))});
    }
    if (!ch.added.empty() || !ch.removed.empty()) {
        root_changed_ = t;
        ch.changed.push_back(kRootIno);
    }
    return ch;
}

std::size_t TagTree::retire() {
    std::unique_lock lock(mutex_);
    return retire_locked();
}

std::size_t TagTree::retire_locked() {
    const std::size_t n = retired_count_;
    if (n == 0)
        return 0;
    std::erase_if(entries_, [](const TagEntry& e) { return e.retired; });
    retired_count_ = 0;
    if (entries_.capacity() > entries_.size() + entries_.size() / 4 + 64)
        entries_.shrink_to_fit();
    return n;
}

std::shared_ptr<const TagRecord> TagTree::find(const Uuid& tag) const {
    std::shared_lock lock(mutex_);
    auto it = slot_of_.find(tag);
    if (it == slot_of_.end())
        return nullptr;
    const TagEntry* e = entry_at(it->second);
    return e ? e->record : nullptr;
}

std::size_t TagTree::tag_count() const {
    std::shared_lock lock(mutex_);
    return entries_.size() - retired_count_;
}

std::vector<std::shared_ptr<const TagRecord>> TagTree::records() const {
    std::shared_lock lock(mutex_);
    std::vector<std::shared_ptr<const TagRecord>> out;
    out.reserve(entries_.size() - retired_count_);
    for (const auto& e : entries_)
        if (!e.retired)
            out.push_back(e.record);
    return out;
}

} // namespace tagmem
