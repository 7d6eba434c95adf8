// SPDX-License-Identifier: Apache-2.0
#include "cdi_file.hpp"

#include "cdi.hpp"
#include "log.hpp"

#include <fmt/format.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string_view>
#include <vector>

namespace tagmem {
namespace {

// Hidden and without the .json suffix: engines list *.json and *.yaml only.
// One name will do: every write happens on the event thread, one at a time.
constexpr const char* kTempName = ".tagmem.json.tmp";

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

Result<CdiDir> CdiDir::open(const std::string& dir) {
    if (dir.empty() || dir.front() != '/')
        return make_error(EINVAL, fmt::format("CDI directory '{}' is not absolute", dir));
    if (auto made = mkdirs(dir); !made)
        return made.error();
    Fd fd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!fd)
        return sys_error(fmt::format("cannot open {}", dir));
    return CdiDir(std::move(fd), dir);
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
}

std::string CdiDir::path(const Uuid& tag) const {
    return fmt::format("{}/{}", dir_path_, cdi_file_name(tag));
}

Status CdiDir::write(const Uuid& tag, const std::string& content) {
    const std::string temp = fmt::format("{}/{}", dir_path_, kTempName);
    const std::string name = cdi_file_name(tag);
    Fd fd(::openat(dir_.get(), kTempName, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
                   0644));
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
    if (done && ::renameat(dir_.get(), kTempName, dir_.get(), name.c_str()) != 0)
        done = sys_error(fmt::format("cannot rename {} to {}", temp, path(tag)));
    if (!done) {
        ::unlinkat(dir_.get(), kTempName, 0);
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
        if ((tag && !keep(*tag)) || name == kCdiLegacyFileName || name == kTempName)
            stale.emplace_back(name);
    }
    ::closedir(d);
    for (const auto& name : stale)
        if (auto gone = unlink_owned(name); !gone)
            log::warning("{}", gone.error().message);
}

} // namespace tagmem
