// SPDX-License-Identifier: Apache-2.0
// The device nodes behind each tag's `data`.
//
// `data` is a symlink to <nodes>/<tag>, a character device node on a small
// tmpfs that tagmemfs owns, rather than a character device inode of the FUSE
// filesystem itself. Opening a dax device makes device_dax set S_DAX on the
// inode it was opened through (dax_open); on a kernel with CONFIG_FUSE_DAX
// (Debian's), evicting such a FUSE inode later runs FUSE's own DAX cleanup
// on state that does not exist and crashes the kernel - at unmount, or when
// a tag changes. A tmpfs inode is harmless, exactly like /dev's.
//
// The tmpfs is mounted nosuid,noexec and then bind-mounted read-only over
// itself, so nobody (root included) can chmod, replace or add a node through
// the path; tagmemfs keeps a descriptor of the writable mount underneath and
// changes nodes only through it. A node is made with no access for anyone
// but root, then given its owner, then its mode, so that it is never more
// open than it will be; an existing node is replaced atomically (the new one
// is made aside and renamed into place), so an open never sees a half-made
// node, and is left alone when it already has the number, owner and mode
// asked for.
#pragma once

#include "fd.hpp"
#include "result.hpp"
#include "sysfs_value.hpp"

#include <sys/types.h>

#include <string>

namespace tagmem {

class NodeDir {
  public:
    // Mounts at path (created if missing); a nodes mount left by a daemon
    // that died is detached first.
    static Result<NodeDir> mount(const std::string& path);
    NodeDir(NodeDir&& other) noexcept;
    NodeDir& operator=(NodeDir&&) = delete;
    ~NodeDir(); // detaches: programs holding a node open keep it

    // Makes or replaces the node, unless it is already exactly this.
    Status put(const std::string& name, DevNumber rdev, uid_t uid, gid_t gid, mode_t mode);
    void remove(const std::string& name);
    std::string path_of(const std::string& name) const { return path_ + "/" + name; }
    const std::string& path() const { return path_; }

  private:
    NodeDir(Fd rw, std::string path);
    Fd rw_; // the writable tmpfs, under the read-only bind mount
    std::string path_;
    // Who owns a node as mknod makes it, and what the umask takes from its
    // mode: put() skips chown and chmod when they would change nothing.
    uid_t made_uid_;
    gid_t made_gid_;
    mode_t umask_;
};

} // namespace tagmem
