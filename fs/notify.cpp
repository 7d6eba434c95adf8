// SPDX-License-Identifier: Apache-2.0
#include "notify.hpp"

#include "log.hpp"

#include <cerrno>
#include <cstring>

namespace tagmem {
namespace {

// ENOENT means the kernel had nothing cached: nothing to forget.
void report(int rc, const char* what, std::uint64_t ino) {
    if (rc != 0 && rc != -ENOENT)
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
    for (const auto& [parent, name] : changes.added)
        report(fuse_lowlevel_notify_inval_entry(se, parent, name.data(), name.size()),
               "inval_entry", parent);
    // Attributes, file contents and cached directory listings.
    for (auto ino : changes.changed)
        report(fuse_lowlevel_notify_inval_inode(se, ino, 0, 0), "inval_inode", ino);
}

} // namespace tagmem
