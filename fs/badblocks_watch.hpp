// SPDX-License-Identifier: Apache-2.0
// The kernel's notifications on regionN/badblocks, without polling sysfs in a
// loop: the daemon keeps one open descriptor per region's attribute and waits
// for POLLPRI|POLLERR on it in its event loop (sysfs_notify). Each descriptor
// is read once when opened, and again (pread at 0) after each notification:
// reading is what re-arms kernfs's poll. A plain file (a synthetic host)
// never signals; there a rescan (SIGHUP, a uevent) re-reads.
#pragma once

#include "fd.hpp"
#include "result.hpp"

#include <poll.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace tagmem {

class BadblocksWatch {
  public:
    // Watches exactly these regions (name -> badblocks path): opens the new
    // ones, closes the ones not listed. A path that cannot be opened is
    // tried again at the next sync (a rescan re-reads it anyway).
    void sync(const std::map<std::string, std::string>& paths);
    void poll_fds(std::vector<pollfd>& fds) const;
    // For the pollfds poll_fds() added (in that order, as poll returned
    // them): the regions that were notified, with their fresh text.
    std::vector<std::pair<std::string, Result<std::string>>> handle(const std::vector<pollfd>& fds);
    std::size_t size() const { return watched_.size(); }

  private:
    struct Watched {
        std::string path;
        Fd fd;
    };
    std::map<std::string, Watched> watched_;
};

// The whole attribute through an open descriptor, from offset 0.
Result<std::string> pread_all(int fd, const std::string& path);

} // namespace tagmem
