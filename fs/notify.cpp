// SPDX-License-Identifier: Apache-2.0
#include "notify.hpp"

#include "log.hpp"

#include <cerrno>
#include <cstring>
#include <string_view>

namespace tagmem {
namespace {

// ENOENT means the kernel had nothing cached: nothing to forget.
// ENOTEMPTY from a delete means a file of the directory is still in use (a
// reader has it open): the kernel has unhashed the directory's entry all the
// same, so the next path walk asks the daemon; it only could not mark the
// directory dead. Expected under readers, so not worth a warning.
void report(int rc, const char* what, std::uint64_t ino) {
    if (rc == 0 || rc == -ENOENT)
        return;
    if (rc == -ENOTEMPTY && std::string_view(what) == "delete")
        log::debug("notify {} for inode {}: {}", what, ino, std::strerror(-rc));
    else
        log::warning("notify {} for inode {}: {}", what, ino, std::strerror(-rc));
}

} // namespace

void notify_kernel(fuse_session* se, const TreeChanges& changes) {
    // Removals first, children before their directory, so that no name can
    // be resolved to an inode that is gone.
    for (const auto& r : changes.removed)
        report(fuse_lowlevel_notify_delete(se, r.parent, r.child, r.name.data(), r.name.size()),
               "delete", r.child);
    // A name that appears may sit in the dentry cache as a negative entry.
    // The kernel takes the directory's lock for this, so a LOOKUP answered
    // before the change is instantiated first and then forgotten.
    for (const auto& [parent, name] : changes.added)
        report(fuse_lowlevel_notify_inval_entry(se, parent, name.data(), name.size()),
               "inval_entry", parent);
    // A file whose size or content changed. Invalidating its inode alone is
    // not enough: a LOOKUP (or READDIRPLUS) answered before the change may
    // not have created the inode yet. The kernel then finds none (ENOENT),
    // and the reply creates it afterwards with the old size, which caps
    // every read for the attribute timeout (a day): JSON cut short. The
    // kernel holds the directory's lock from sending such a request until
    // the inode exists, and inval_entry takes that lock, so it is a
    // barrier: once it returns, the inode is there if any reply made it, and
    // the inval_inode after it reaches that inode.
    for (const auto& f : changes.refreshed) {
        report(fuse_lowlevel_notify_inval_entry(se, f.parent, f.name.data(), f.name.size()),
               "inval_entry", f.parent);
        report(fuse_lowlevel_notify_inval_inode(se, f.child, 0, 0), "inval_inode", f.child);
    }
    // Directories: attributes and cached listings. Their inodes are not new
    // in the kernel when a reply about their children is in flight.
    for (auto ino : changes.changed)
        report(fuse_lowlevel_notify_inval_inode(se, ino, 0, 0), "inval_inode", ino);
}

} // namespace tagmem
