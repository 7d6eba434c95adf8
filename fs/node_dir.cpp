// SPDX-License-Identifier: Apache-2.0
#include "node_dir.hpp"

#include "log.hpp"
#include "mount.hpp"

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstring>

namespace tagmem {
namespace {

constexpr const char* kSource = "tagmem-nodes";

// Whether the top mount at path is one of ours (a previous daemon's).
bool is_nodes_mount(const std::string& path) {
    auto mi = find_mount(path);
    return mi && mi->fstype == "tmpfs" && mi->source == kSource;
}

} // namespace

Result<NodeDir> NodeDir::mount(const std::string& path) {
    // A dead daemon's nodes: detach them (their open users keep them).
    for (int i = 0; i < 8 && is_nodes_mount(path); ++i) {
        log::warning("{}: detaching the device nodes of a previous tagmemfs", path);
        if (::umount2(path.c_str(), MNT_DETACH) != 0)
            return sys_error(fmt::format("cannot detach {}", path));
    }
    if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST)
        return sys_error(fmt::format("cannot create {}", path));
    if (::mount(kSource, path.c_str(), "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=1m") != 0)
        return sys_error(fmt::format("cannot mount a tmpfs on {}", path));
    Fd rw(::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!rw) {
        auto err = sys_error(fmt::format("cannot open {}", path));
        ::umount2(path.c_str(), MNT_DETACH);
        return err;
    }
    if (::mount(path.c_str(), path.c_str(), nullptr, MS_BIND, nullptr) != 0 ||
        ::mount(nullptr, path.c_str(), nullptr,
                MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC, nullptr) != 0) {
        auto err = sys_error(fmt::format("cannot make {} read-only", path));
        ::umount2(path.c_str(), MNT_DETACH);
        ::umount2(path.c_str(), MNT_DETACH);
        return err;
    }
    return NodeDir(std::move(rw), path);
}

NodeDir::NodeDir(Fd rw, std::string path)
    : rw_(std::move(rw)), path_(std::move(path)), made_uid_(::geteuid()), made_gid_(::getegid()),
      umask_(::umask(0)) {
    ::umask(umask_); // read, not changed (startup: no other thread creates files yet)
}

NodeDir::NodeDir(NodeDir&& other) noexcept
    : rw_(std::move(other.rw_)), path_(std::move(other.path_)), made_uid_(other.made_uid_),
      made_gid_(other.made_gid_), umask_(other.umask_) {}

NodeDir::~NodeDir() {
    if (!rw_)
        return;
    rw_.reset();
    // The read-only bind, then the tmpfs under it.
    ::umount2(path_.c_str(), MNT_DETACH);
    ::umount2(path_.c_str(), MNT_DETACH);
}

Status NodeDir::put(const std::string& name, DevNumber rdev, uid_t uid, gid_t gid, mode_t mode) {
    // A node is made with no access for anyone (root aside) whenever its
    // owner or mode must still be set, then given its owner, then its mode:
    // at no instant is it open to anyone its final owner and mode exclude
    // (chown before chmod: a mode meant for the final owner never applies to
    // root's node, or the other way). A node that needs neither (root 0600,
    // the default) is made in its final form, one syscall per tag at
    // startup. A new name is made in place; an existing node is replaced
    // whole by a rename, so an open() never meets a half-made one; one that
    // already is what is asked for is left alone.
    const dev_t dev = makedev(rdev.major, rdev.minor);
    const mode_t want = mode & 0777;
    const bool chown = uid != made_uid_ || gid != made_gid_;
    const bool chmod = chown || want != 0600 || (umask_ & 0600) != 0;
    const mode_t first = chmod ? 0 : want;
    std::string at = name;
    bool replacing = false;
    if (::mknodat(rw_.get(), at.c_str(), S_IFCHR | first, dev) != 0) {
        if (errno != EEXIST)
            return sys_error(fmt::format("mknod {}", path_of(name)));
        struct stat st {};
        if (::fstatat(rw_.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISCHR(st.st_mode) && st.st_rdev == dev && st.st_uid == uid && st.st_gid == gid &&
            (st.st_mode & 07777) == want)
            return Ok{};
        at = "." + name + ".new";
        replacing = true;
        ::unlinkat(rw_.get(), at.c_str(), 0);
        if (::mknodat(rw_.get(), at.c_str(), S_IFCHR | first, dev) != 0)
            return sys_error(fmt::format("mknod {}", path_of(at)));
    }
    if ((chown && ::fchownat(rw_.get(), at.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0) ||
        (chmod && ::fchmodat(rw_.get(), at.c_str(), want, 0) != 0) ||
        (replacing && ::renameat(rw_.get(), at.c_str(), rw_.get(), name.c_str()) != 0)) {
        auto err = sys_error(fmt::format("cannot set up {}", path_of(name)));
        ::unlinkat(rw_.get(), at.c_str(), 0);
        return err;
    }
    return Ok{};
}

void NodeDir::remove(const std::string& name) {
    if (::unlinkat(rw_.get(), name.c_str(), 0) != 0 && errno != ENOENT)
        log::warning("cannot remove {}: {}", path_of(name), std::strerror(errno));
}

} // namespace tagmem
