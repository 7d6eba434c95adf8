// SPDX-License-Identifier: Apache-2.0
#include "mount_lock.hpp"

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>

namespace tagmem {
namespace {

Result<std::string> resolved(const std::string& path) {
    std::unique_ptr<char, decltype(&std::free)> p(::realpath(path.c_str(), nullptr), &std::free);
    if (!p)
        return make_error(errno, fmt::format("cannot resolve {}: {}", path, std::strerror(errno)));
    return std::string(p.get());
}

} // namespace

Result<std::string> mount_lock_path(const std::string& mount_point) {
    std::string path = mount_point;
    while (path.size() > 1 && path.back() == '/')
        path.pop_back();
    // A mount point that resolves (it exists, and is no dead FUSE mount)
    // is named by its resolved path: a symlink to it leads to the same lock.
    if (auto whole = resolved(path)) {
        if (*whole == "/")
            return make_error(EINVAL, "tagmemfs cannot be mounted on /");
        return *whole + ".lock";
    }
    auto slash = path.rfind('/');
    std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
    std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
    if (name.empty() || name == "." || name == "..")
        return make_error(EINVAL, fmt::format("{}: not a mount point path", mount_point));
    auto parent = resolved(dir);
    if (!parent)
        return parent.error();
    return (*parent == "/" ? "" : *parent) + "/" + name + ".lock";
}

Result<MountLock> MountLock::acquire(const std::string& mount_point) {
    auto path = mount_lock_path(mount_point);
    if (!path)
        return path.error();
    // O_NOFOLLOW and the checks below: the mount point may be in a
    // directory others can write (/tmp), where a planted symlink or FIFO
    // must not make root write to, or hang on, a file of their choosing.
    Fd fd(::open(path->c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0644));
    if (!fd)
        return make_error(
            errno, fmt::format("cannot open the lock file {}: {}", *path, std::strerror(errno)));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != 0 || st.st_nlink != 1)
        return make_error(EPERM, fmt::format("{} is not a lock file of root's (a regular file "
                                             "owned by root with one link); remove it",
                                             *path));
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        if (err != EWOULDBLOCK)
            return make_error(err, fmt::format("cannot lock {}: {}", *path, std::strerror(err)));
        char buf[32] = {};
        auto n = ::pread(fd.get(), buf, sizeof buf - 1, 0);
        std::string pid(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
        while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' '))
            pid.pop_back();
        return make_error(EWOULDBLOCK,
                          fmt::format("{} is served by another tagmemfs{} (it holds the lock {})",
                                      mount_point, pid.empty() ? "" : fmt::format(", pid {}", pid),
                                      *path));
    }
    MountLock lock(std::move(fd), std::move(*path));
    lock.record_pid();
    return lock;
}

void MountLock::record_pid() const {
    // Only for the message of a second daemon: failures change nothing.
    auto text = fmt::format("{}\n", ::getpid());
    if (::ftruncate(fd_.get(), 0) == 0) {
        [[maybe_unused]] auto n = ::pwrite(fd_.get(), text.data(), text.size(), 0);
    }
}

} // namespace tagmem
