// SPDX-License-Identifier: Apache-2.0
// The channel programs use to learn of tags (inotify sees nothing inside a
// FUSE mount) and to ask the daemon what it shows: a Unix stream socket, by
// default next to the mount point (/run/tagmem.sock), speaking JSON lines.
// docs/watch-protocol.md is the full protocol; in short, one request per
// connection:
//
//   -> {"op":"watch"}   <- {"event":"exists",...,"seq":1} ... {"event":"snapshot-end","seq":N}
//                          then {"event":"added"|"removed"|"changed",...,"seq":N+1} ...
//   -> {"op":"wait","tag":"<uuid>"}  <- {"event":"ready",...}, then the server closes
//   -> {"op":"list"} / {"op":"show","tag":"<uuid>"}  <- one JSON line, then close
//   -> {"op":"stats"} (root only)    <- {"requests":{...},"tags":N,"watch":{...}}
//
// A client learns of changes only to tags whose data it may open (by
// SO_PEERCRED and its groups against the tag's owner, group and mode); list
// and show answer what the mount shows everyone, without what the kernel
// shows root alone (physical ranges) unless the client is root.
//
// The socket is mode 0666, so every local user can reach it and some may be
// hostile: every client's cost is bounded (WatchLimits), work per wakeup is
// bounded per client (one read, one write), accepts per wakeup are bounded,
// and an fd shortage never makes the listener spin.
//
// Owned and driven by the daemon's event thread: not thread-safe.
#pragma once

#include "cdi.hpp"
#include "fd.hpp"
#include "result.hpp"
#include "tag_tree.hpp"
#include "watch_limits.hpp"
#include "watch_protocol.hpp"

#include <poll.h>
#include <sys/types.h>

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tagmem {

// What the server reports on; all owned by the daemon.
struct WatchSources {
    const TagTree* tree = nullptr;
    std::string mount_point;
    std::function<std::string()> stats;   // {"op":"stats"}: the daemon's counters (JSON)
    std::function<ScanResult()> snapshot; // {"op":"list"}: everything the daemon knows
};

class WatchServer {
  public:
    static Result<WatchServer> listen(const std::string& path, WatchSources sources,
                                      WatchLimits limits);
    WatchServer(WatchServer&&) noexcept = default;
    ~WatchServer();

    // The fds to poll (listening socket and clients), with the events wanted.
    void poll_fds(std::vector<pollfd>& fds) const;
    // Handles readiness on the fds it asked for.
    void handle(const std::vector<pollfd>& fds);
    // Milliseconds until tick() has something to do (-1: nothing pending).
    int timeout_ms() const;
    // Closes clients past their deadline; resumes a paused listener.
    void tick();
    // After the kernel has been told: the changes are visible in the mount.
    // The event of a tag in `revoked` names the CDI devices it revokes.
    void publish(const std::vector<TagEvent>& events,
                 const std::vector<CdiRevocation>& revoked = {});
    // The host changed in a way events do not say (rejected or untagged
    // devices): cached list replies are stale.
    void invalidate() { cache_ = {}; }

    std::size_t clients() const { return clients_.size(); }

  private:
    using Clock = std::chrono::steady_clock;
    using Records = std::vector<std::shared_ptr<const TagRecord>>;
    enum class Phase { request, watching, waiting, closing };

    struct Client {
        Fd fd;
        uid_t uid = 0;
        std::vector<gid_t> groups; // primary first
        Phase phase = Phase::request;
        Clock::time_point deadline; // request and closing phases only
        bool peer_shut = false;     // read EOF: nothing more to read
        std::string in;             // the request being read
        std::string out;            // output not yet written, from out_off
        std::size_t out_off = 0;
        bool mid_line = false;   // the last byte written was not a newline
        std::uint64_t seq = 0;   // of the last line sent to this watcher
        std::uint64_t order = 0; // of acceptance: eviction takes a uid's newest
        std::optional<Uuid> waiting;
        // While a watcher's initial snapshot is sent: the records as they
        // were at its request, the next to send, and the events since,
        // held back (without their seq) to follow the snapshot.
        std::shared_ptr<const Records> snapshot;
        std::size_t snapshot_next = 0;
        std::deque<std::string> held;
        std::size_t held_bytes = 0;

        std::size_t queued() const { return out.size() - out_off + held_bytes; }
    };

    struct Counters {
        std::uint64_t accepted = 0, refused = 0, shed = 0, timed_out = 0, overflowed = 0,
                      bad_requests = 0, evicted = 0;
    };

    // A list reply per privilege level, rendered once per host change.
    struct Cache {
        std::shared_ptr<const std::string> list[2];
        std::shared_ptr<const Records> records;
    };

    WatchServer(Fd listener, Fd reserve, std::string path, WatchSources sources, WatchLimits limits)
        : listener_(std::move(listener)), reserve_(std::move(reserve)), path_(std::move(path)),
          src_(std::move(sources)), limits_(limits) {}

    void accept_clients();
    bool shed_connection();
    // Whether a connection of uid may be taken: within root's budget, or
    // within the per-uid limit and, when the non-root budget is full,
    // after evicting a connection of the uid holding the most.
    bool admit(uid_t uid);
    // The non-root uid holding the most connections, and how many.
    std::pair<uid_t, unsigned> largest_holder() const;
    void evict_newest_of(uid_t uid);
    void read_request(Client& c);
    void on_request(Client& c, const std::string& line);
    void start_watch(Client& c);
    void continue_snapshot(Client& c);
    void deliver(Client& c, const std::string& event_prefix);
    void reply_and_close(Client& c, const std::string& json_line);
    void fail(Client& c, const std::string& why);
    void overflow(Client& c, const char* why);
    void enforce_total_budget();
    void enqueue(Client& c, std::string_view line);
    void write_some(Client& c);
    void drop(Client& c);
    void reap();
    bool may_see(const Client& c, const Access& access) const;
    std::string ready_line(const TagRecord& r) const;
    const std::string& list_reply(bool privileged);
    std::shared_ptr<const Records> records();
    std::string stats_reply() const;

    Fd listener_;
    Fd reserve_; // an fd given up to accept-and-close a client when at the fd limit
    std::string path_;
    WatchSources src_;
    WatchLimits limits_;
    std::map<int, Client> clients_;
    std::map<uid_t, unsigned> per_uid_; // open non-root connections
    unsigned non_root_clients_ = 0;     // the sum of per_uid_
    std::uint64_t accepts_ = 0;         // Client::order of the next one
    unsigned root_clients_ = 0;
    std::size_t queued_total_ = 0;
    std::optional<Clock::time_point> listener_paused_until_;
    Cache cache_;
    Counters counters_;
    // Clients can cause warnings at will: one of each kind per interval.
    Clock::time_point last_refusal_log_{}, last_overflow_log_{};
};

} // namespace tagmem
