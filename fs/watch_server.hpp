// SPDX-License-Identifier: Apache-2.0
// The channel programs use to learn of tags (inotify sees nothing inside a
// FUSE mount): a Unix stream socket, by default next to the mount point
// (/run/tagmem.sock), speaking JSON lines. See docs/watch-protocol.md.
//
//   -> {"op":"watch"}              <- {"event":"added","tag":...,"device":...,"state":...}
//   -> {"op":"wait","tag":"<uuid>"}  <- {"event":"ready",...}, then the server closes
//   -> {"op":"stats"} (root only)    <- {"requests":{...},"tags":N}, then the server closes
//
// A client learns only of tags whose data it may open (by SO_PEERCRED and
// its groups against the tag's owner, group and mode); root learns of all.
// The server never blocks on a slow client: each has its own queue.
//
// Owned and driven by the daemon's event thread: not thread-safe.
#pragma once

#include "fd.hpp"
#include "result.hpp"
#include "tag_tree.hpp"

#include <poll.h>
#include <sys/types.h>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace tagmem {

class WatchServer {
  public:
    // stats() answers {"op":"stats"} from root: the daemon's counters.
    static Result<WatchServer> listen(const std::string& path, const TagTree* tree,
                                      std::string mount_point, std::function<std::string()> stats);
    WatchServer(WatchServer&&) noexcept = default;
    ~WatchServer();

    // The fds to poll (listening socket and clients), with the events wanted.
    void poll_fds(std::vector<pollfd>& fds) const;
    // Handles readiness on the fds it asked for.
    void handle(const std::vector<pollfd>& fds);
    // After the kernel has been told: the changes are visible in the mount.
    void publish(const std::vector<TagEvent>& events);

    std::size_t clients() const { return clients_.size(); }

  private:
    struct Client {
        Fd fd;
        uid_t uid = 0;
        std::vector<gid_t> groups; // primary first
        std::string in;            // request being read
        std::string out;           // replies not yet written
        bool watching = false;
        std::optional<Uuid> waiting;
        bool close_after_flush = false;
    };

    WatchServer(Fd listener, std::string path, const TagTree* tree, std::string mount_point,
                std::function<std::string()> stats)
        : listener_(std::move(listener)), path_(std::move(path)), tree_(tree),
          mount_point_(std::move(mount_point)), stats_(std::move(stats)) {}
    void accept_clients();
    void read_request(Client& c);
    void on_request(Client& c, const std::string& line);
    void send(Client& c, const std::string& json_line);
    void flush(Client& c);
    bool may_see(const Client& c, const Access& access) const;
    std::string ready_line(const TagRecord& r) const;

    Fd listener_;
    std::string path_;
    const TagTree* tree_ = nullptr;
    std::string mount_point_;
    std::function<std::string()> stats_;
    std::map<int, Client> clients_;
    std::uint64_t seq_ = 0;
};

} // namespace tagmem
