// SPDX-License-Identifier: Apache-2.0
#include "badblocks_watch.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace tagmem {

Result<std::string> pread_all(int fd, const std::string& path) {
    std::string out;
    char buf[4096];
    for (;;) {
        ssize_t n = ::pread(fd, buf, sizeof buf, static_cast<off_t>(out.size()));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return sys_error("read " + path);
        if (n == 0)
            return out;
        out.append(buf, static_cast<std::size_t>(n));
        if (out.size() > (1u << 20))
            return make_error(EFBIG, path + ": longer than 1 MiB");
    }
}

void BadblocksWatch::sync(const std::map<std::string, std::string>& paths) {
    for (auto it = watched_.begin(); it != watched_.end();) {
        auto p = paths.find(it->first);
        it =
            (p == paths.end() || p->second != it->second.path) ? watched_.erase(it) : std::next(it);
    }
    for (const auto& [name, path] : paths) {
        if (watched_.contains(name))
            continue;
        Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd)
            continue;
        // Arms the notification: kernfs signals changes after the last read.
        (void)pread_all(fd.get(), path);
        watched_.emplace(name, Watched{path, std::move(fd)});
    }
}

void BadblocksWatch::poll_fds(std::vector<pollfd>& fds) const {
    for (const auto& [name, w] : watched_)
        fds.push_back({w.fd.get(), POLLPRI | POLLERR, 0});
}

std::vector<std::pair<std::string, Result<std::string>>>
BadblocksWatch::handle(const std::vector<pollfd>& fds) {
    std::vector<std::pair<std::string, Result<std::string>>> out;
    std::size_t i = 0;
    for (auto& [name, w] : watched_) {
        if (i >= fds.size())
            break;
        const pollfd& p = fds[i++];
        if (p.fd != w.fd.get() || !(p.revents & (POLLPRI | POLLERR | POLLNVAL)))
            continue;
        out.emplace_back(name, pread_all(w.fd.get(), w.path));
    }
    return out;
}

} // namespace tagmem
