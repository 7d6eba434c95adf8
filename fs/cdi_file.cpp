// SPDX-License-Identifier: Apache-2.0
#include "cdi_file.hpp"

#include "cdi.hpp"
#include "log.hpp"

#include <fmt/format.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string_view>
#include <vector>

namespace tagmem {
namespace {

// Temporary files are hidden and without the .json suffix (engines list
// *.json and *.yaml only), and named by the tag and this process: no two
// writers, nor a file a crashed run left, ever share one. Older versions
// used one fixed name, removed at start like the rest.
constexpr std::string_view kTempPrefix = ".tagmem-";
constexpr std::string_view kTempSuffix = ".tmp";
constexpr const char* kOldTempName = ".tagmem.json.tmp";
constexpr const char* kLockName = ".tagmem.lock";

std::string temp_name(const Uuid& tag) {
    return fmt::format("{}{}.{}{}", kTempPrefix, tag.str(), ::getpid(), kTempSuffix);
}

bool is_temp_name(std::string_view name) {
    return name == kOldTempName || (name.size() > kTempPrefix.size() + kTempSuffix.size() &&
                                    name.starts_with(kTempPrefix) && name.ends_with(kTempSuffix));
}

// The directory's lock (see cdi_file.hpp). The file is unlinked at a clean
// stop, so a lock taken on a file that was unlinked meanwhile is taken
// again on the one now at that name: two daemons never both hold "the" lock.
Result<Fd> lock_dir(int dir, const std::string& dir_path, const std::string& mount_point) {
    const std::string path = fmt::format("{}/{}", dir_path, kLockName);
    for (int attempt = 0; attempt < 8; ++attempt) {
        // O_NOFOLLOW, O_NONBLOCK and the checks below: a CDI directory may
        // be writable by others, who must not make root write through a
        // planted link or hang on a FIFO.
        Fd fd(
            ::openat(dir, kLockName, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0644));
        if (!fd)
            return sys_error(fmt::format("cannot open the lock file {}", path));
        struct stat st {};
        if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != ::geteuid() ||
            st.st_nlink > 1)
            return make_error(EPERM, fmt::format("{} is not a lock file of this user's (a "
                                                 "regular file with one link); remove it",
                                                 path));
        if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
            const int err = errno;
            if (err != EWOULDBLOCK)
                return make_error(err, fmt::format("cannot lock {}: {}", path, std::strerror(err)));
            char buf[512] = {};
            auto n = ::pread(fd.get(), buf, sizeof buf - 1, 0);
            std::string owner(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
            while (!owner.empty() && owner.back() == '\n')
                owner.pop_back();
            return make_error(EWOULDBLOCK,
                              fmt::format("CDI directory {} is kept by the tagmemfs of {} (it "
                                          "holds {}); give this one cdi-dir= or no-cdi",
                                          dir_path, owner.empty() ? "another mount point" : owner,
                                          path));
        }
        struct stat now {};
        if (::fstatat(dir, kLockName, &now, AT_SYMLINK_NOFOLLOW) != 0 || now.st_ino != st.st_ino ||
            now.st_dev != st.st_dev)
            continue; // unlinked by a daemon stopping in between: take the new one
        // Only for the message of a second daemon: failures change nothing.
        const std::string text = mount_point + "\n";
        if (::ftruncate(fd.get(), 0) == 0) {
            [[maybe_unused]] auto w = ::pwrite(fd.get(), text.data(), text.size(), 0);
        }
        return fd;
    }
    return make_error(EAGAIN, fmt::format("cannot lock {}: it keeps being replaced", path));
}

Status mkdirs(const std::string& dir) {
    for (std::size_t at = 1; at <= dir.size(); ++at) {
        if (at != dir.size() && dir[at] != '/')
            continue;
        std::string prefix = dir.substr(0, at);
        if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST)
            return sys_error(fmt::format("cannot create {}", prefix));
    }
    return Ok{};
}

Status write_all(int fd, std::string_view data, const std::string& path) {
    while (!data.empty()) {
        ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return sys_error(fmt::format("cannot write {}", path));
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return Ok{};
}

} // namespace

Result<CdiDir> CdiDir::open(const std::string& dir, const std::string& mount_point) {
    if (dir.empty() || dir.front() != '/')
        return make_error(EINVAL, fmt::format("CDI directory '{}' is not absolute", dir));
    if (auto made = mkdirs(dir); !made)
        return made.error();
    Fd fd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!fd)
        return sys_error(fmt::format("cannot open {}", dir));
    auto lock = lock_dir(fd.get(), dir, mount_point);
    if (!lock)
        return lock.error();
    return CdiDir(std::move(fd), std::move(*lock), dir);
}

CdiDir::~CdiDir() {
    if (!dir_)
        return;
    // A copy of each tag: remove() erases it from written_, and a reference
    // into the set would dangle (ASan caught that). remove() forgets the
    // tag even when unlinking fails, so this loop ends.
    while (!written_.empty()) {
        const Uuid tag = *written_.begin();
        if (auto gone = remove(tag); !gone)
            log::warning("{}", gone.error().message);
    }
    // While still holding the lock: the next daemon creates a new file (a
    // leftover is harmless too, the lock being the kernel's, not the file's).
    ::unlinkat(dir_.get(), kLockName, 0);
}

std::string CdiDir::path(const Uuid& tag) const {
    return fmt::format("{}/{}", dir_path_, cdi_file_name(tag));
}

Status CdiDir::write(const Uuid& tag, const std::string& content) {
    const std::string temp_leaf = temp_name(tag);
    const std::string temp = fmt::format("{}/{}", dir_path_, temp_leaf);
    const std::string name = cdi_file_name(tag);
    // O_EXCL: a name of this pid that exists was left by a crashed run that
    // had the same pid; it is removed and made anew, never written through.
    const int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    Fd fd(::openat(dir_.get(), temp_leaf.c_str(), flags, 0644));
    if (!fd && errno == EEXIST && ::unlinkat(dir_.get(), temp_leaf.c_str(), 0) == 0)
        fd = Fd(::openat(dir_.get(), temp_leaf.c_str(), flags, 0644));
    if (!fd)
        return sys_error(fmt::format("cannot create {}", temp));
    // Readable by rootless engines too, whatever the umask: the nodes' own
    // modes decide who may use a tag.
    Status done = ::fchmod(fd.get(), 0644) == 0 ? Status(Ok{}) : sys_error("chmod " + temp);
    if (done)
        done = write_all(fd.get(), content, temp);
    if (done && ::fsync(fd.get()) != 0)
        done = sys_error(fmt::format("cannot sync {}", temp));
    // rename() replaces whatever has the name, a link included, never what
    // a link leads to.
    if (done && ::renameat(dir_.get(), temp_leaf.c_str(), dir_.get(), name.c_str()) != 0)
        done = sys_error(fmt::format("cannot rename {} to {}", temp, path(tag)));
    if (!done) {
        ::unlinkat(dir_.get(), temp_leaf.c_str(), 0);
        return done;
    }
    written_.insert(tag);
    // The rename itself survives a power cut only once the directory is
    // synced (on a disk; /var/run is a tmpfs, where this costs nothing).
    Fd dir(::openat(dir_.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir)
        ::fsync(dir.get());
    return Ok{};
}

Status CdiDir::remove(const Uuid& tag) {
    // Forgotten last: the caller's tag may be the set's own element.
    const std::string name = cdi_file_name(tag);
    Status done = Ok{};
    if (::unlinkat(dir_.get(), name.c_str(), 0) != 0 && errno != ENOENT)
        done = sys_error(fmt::format("cannot remove {}/{}", dir_path_, name));
    written_.erase(tag);
    return done;
}

Status CdiDir::unlink_owned(const std::string& name) {
    struct stat st {};
    if (::fstatat(dir_.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
        return errno == ENOENT ? Status(Ok{}) : sys_error(fmt::format("cannot stat {}", name));
    // Not ours: a link, a directory, another user's file. Left alone.
    if (!S_ISREG(st.st_mode) || st.st_uid != ::geteuid()) {
        log::warning("{}/{}: not a regular file of this user; left alone", dir_path_, name);
        return Ok{};
    }
    if (::unlinkat(dir_.get(), name.c_str(), 0) != 0 && errno != ENOENT)
        return sys_error(fmt::format("cannot remove {}/{}", dir_path_, name));
    log::info("removed {}/{}, left by a previous run", dir_path_, name);
    return Ok{};
}

void CdiDir::remove_stale(const std::function<bool(const Uuid&)>& keep) {
    Fd listing(::openat(dir_.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    DIR* d = listing ? ::fdopendir(listing.get()) : nullptr;
    if (!d) {
        log::warning("cannot list {}: {}", dir_path_, std::strerror(errno));
        return;
    }
    listing.release(); // closedir closes it
    std::vector<std::string> stale;
    while (const dirent* e = ::readdir(d)) {
        const std::string_view name = e->d_name;
        auto tag = cdi_file_tag(name);
        if ((tag && !keep(*tag)) || name == kCdiLegacyFileName || is_temp_name(name))
            stale.emplace_back(name);
    }
    ::closedir(d);
    for (const auto& name : stale)
        if (auto gone = unlink_owned(name); !gone)
            log::warning("{}", gone.error().message);
}

} // namespace tagmem
