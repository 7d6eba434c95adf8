// SPDX-License-Identifier: Apache-2.0
#include "cdi_file.hpp"

#include "cdi.hpp"
#include "log.hpp"

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string_view>

namespace tagmem {
namespace {

// Hidden and without the .json suffix: engines list *.json and *.yaml only.
constexpr const char* kTempName = ".tagmem.json.tmp";

Error sys_error(const std::string& what) {
    return make_error(errno, fmt::format("{}: {}", what, std::strerror(errno)));
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

Result<CdiFile> CdiFile::open(const std::string& dir) {
    if (dir.empty() || dir.front() != '/')
        return make_error(EINVAL, fmt::format("CDI directory '{}' is not absolute", dir));
    if (auto made = mkdirs(dir); !made)
        return made.error();
    Fd fd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!fd)
        return sys_error(fmt::format("cannot open {}", dir));
    return CdiFile(std::move(fd), dir);
}

CdiFile::~CdiFile() {
    if (!dir_)
        return;
    if (auto gone = remove(); !gone)
        log::warning("{}", gone.error().message);
}

std::string CdiFile::path() const {
    return fmt::format("{}/{}", dir_path_, kCdiFileName);
}

Status CdiFile::write(const std::string& content) {
    const std::string temp = fmt::format("{}/{}", dir_path_, kTempName);
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
    if (done && ::renameat(dir_.get(), kTempName, dir_.get(), kCdiFileName) != 0)
        done = sys_error(fmt::format("cannot rename {} to {}", temp, path()));
    if (!done) {
        ::unlinkat(dir_.get(), kTempName, 0);
        return done;
    }
    // The rename itself survives a power cut only once the directory is
    // synced (on a disk; /var/run is a tmpfs, where this costs nothing).
    Fd dir(::openat(dir_.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir)
        ::fsync(dir.get());
    return Ok{};
}

Status CdiFile::remove() {
    if (::unlinkat(dir_.get(), kCdiFileName, 0) != 0 && errno != ENOENT)
        return sys_error(fmt::format("cannot remove {}", path()));
    return Ok{};
}

} // namespace tagmem
