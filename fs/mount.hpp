// SPDX-License-Identifier: Apache-2.0
// The FUSE session and its mount, owned by one RAII object. The mount
// options that make tagmemfs safe are not negotiable: `dev` so that `data`
// reaches the dax driver, `nosuid`, `allow_other`, and above all
// `default_permissions`, without which the kernel checks nothing when a
// device node is opened and any user could map any tag's memory.
#pragma once

#include "fuse_ops.hpp"
#include "mountinfo.hpp"
#include "result.hpp"

#include <optional>
#include <set>
#include <string>
#include <vector>

namespace tagmem {

// The top mount at a path, from /proc/self/mountinfo (parsed by mountinfo.cpp).
std::optional<MountInfo> find_mount(const std::string& mount_point);

// The options every mount gets, plus the user's extra `-o` options once
// checked: any that would weaken the required ones is refused.
Result<std::string> mount_options(const std::vector<std::string>& extra);

// A mount point left behind by a killed daemon answers ENOTCONN; it is
// detached so that a new mount can take its place. A live tagmemfs mount is
// an error (EBUSY), never replaced. With StaleMount::keep a dead mount is
// only reported: the daemon checks early and detaches just before it
// mounts, so that the path is not an empty directory while the first scan
// runs (clients would see no tags, without an error).
enum class StaleMount { keep, detach };
Status recover_mount_point(const std::string& mount_point, StaleMount stale);

// Reads /proc/self/mountinfo and checks the options the kernel actually
// applied (a mount made in a user namespace is always nodev, for example).
Status verify_mounted_options(const std::string& mount_point);

class FuseMount {
  public:
    static Result<FuseMount> mount(const std::string& mount_point, const std::string& options,
                                   FsContext* context);
    FuseMount(FuseMount&& other) noexcept;
    FuseMount& operator=(FuseMount&&) = delete;
    FuseMount(const FuseMount&) = delete;
    ~FuseMount();

    fuse_session* session() const { return se_; }
    const std::string& mount_point() const { return mount_point_; }

  private:
    FuseMount(fuse_session* se, std::string mount_point)
        : se_(se), mount_point_(std::move(mount_point)) {}
    fuse_session* se_ = nullptr;
    std::string mount_point_;
};

} // namespace tagmem
