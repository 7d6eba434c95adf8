// SPDX-License-Identifier: Apache-2.0
// One tagmemfs per mount point, proven by a lock rather than by comparing
// paths (a symlink, a bind mount of the parent or a relative path all name
// one mount point in many ways).
//
// The lock is flock(LOCK_EX) on <dir>/<name>.lock, next to the mount point
// as .sock and .nodes are, where dir is the mount point's directory with
// every symlink resolved. flock locks an inode, so every path that leads to
// that directory - through symlinks or bind mounts - finds the same file and
// the same lock; the mount point itself is never used, because a mount over
// it changes what its path leads to. The lock belongs to the open file
// description: fuse_daemonize()'s child inherits it and the parent's exit
// does not drop it; the kernel drops it when the daemon dies, however it
// dies, so there is no stale lock to clean up (the file stays, harmless).
// O_CLOEXEC keeps it from any program the daemon might run.
#pragma once

#include "fd.hpp"
#include "result.hpp"

#include <string>

namespace tagmem {

class MountLock {
  public:
    // Takes the mount point's lock and writes this process's pid into the
    // file, for the message another daemon then gives. EWOULDBLOCK when a
    // live daemon holds it.
    static Result<MountLock> acquire(const std::string& mount_point);
    const std::string& path() const { return path_; }
    // After fuse_daemonize(): the pid in the file is the child's.
    void record_pid() const;

  private:
    MountLock(Fd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
    Fd fd_;
    std::string path_;
};

// The lock file of a mount point (see above). The mount point need not exist.
Result<std::string> mount_lock_path(const std::string& mount_point);

} // namespace tagmem
