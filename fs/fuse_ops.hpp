// SPDX-License-Identifier: Apache-2.0
// The FUSE lowlevel handlers of tagmemfs: each decodes the request, asks the
// TagTree, and replies exactly once. No logic beyond that lives here.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <array>
#include <atomic>
#include <cstdint>

namespace tagmem {

class TagTree;

// Requests served, by kind: benchmarks and tests read them to prove how many
// round trips an operation took.
struct RequestCounters {
    std::atomic<std::uint64_t> lookup{0}, getattr{0}, readlink{0}, opendir{0}, readdir{0}, open{0},
        read{0}, statfs{0}, refused{0};
};

struct FsContext {
    TagTree* tree = nullptr;
    // Names and attributes change only when the daemon says so, and every
    // change is pushed with a notification: the kernel may cache them long.
    double timeout_s = 86400.0;
    RequestCounters counters;
    // Whether the kernel opens files and directories without asking once
    // told ENOSYS (FUSE_CAP_NO_OPEN_SUPPORT, 4.20; _NO_OPENDIR_, 5.1). Set
    // by init from what the kernel offers; until then, and on kernels
    // without it, open and opendir get real replies: ENOSYS there would
    // fail every open and every ls.
    std::atomic<bool> no_open{false};
    std::atomic<bool> no_opendir{false};
};

const fuse_lowlevel_ops& tagmem_fuse_ops();

} // namespace tagmem
