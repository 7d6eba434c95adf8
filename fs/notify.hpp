// SPDX-License-Identifier: Apache-2.0
// Pushes a TagTree update into the kernel's caches. Called from the rescan
// thread only: a notification sent from inside a request handler touching
// the same inodes can deadlock.
#pragma once

#include "fuse_ops.hpp"
#include "tag_tree.hpp"

namespace tagmem {

void notify_kernel(fuse_session* se, const TreeChanges& changes);

} // namespace tagmem
