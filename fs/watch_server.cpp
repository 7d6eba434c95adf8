// SPDX-License-Identifier: Apache-2.0
// Connections, limits and I/O of the watch socket. What the replies say is
// in watch_replies.cpp.
#include "watch_server.hpp"

#include "log.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace tagmem {
namespace {

// Work per wakeup: one read of at most this much per client, one write of
// at most kWriteChunk, at most kAcceptsPerWakeup new connections. Every
// ready client is served in each pass of the event loop, so a flooder gets
// the same share as anyone else and never holds the thread.
constexpr std::size_t kReadChunk = 4096;
constexpr std::size_t kWriteChunk = 64u << 10;
constexpr int kAcceptsPerWakeup = 32;
// The kernel's own buffer per client (SO_SNDBUF; Linux doubles it): a
// client that reads nothing pins this much kernel memory, on top of what
// WatchLimits allows it to queue in the daemon.
constexpr int kSocketBuffer = 32 << 10;
// Out of fds with none to give up: pending clients wait in the backlog for
// this long instead of making the listener's readiness a busy loop.
constexpr auto kListenerPause = std::chrono::milliseconds(100);
// fds the daemon needs besides watch clients (FUSE, nodes, uevents, logs).
constexpr rlim_t kFdsForTheDaemon = 64;
constexpr auto kRefusalLogInterval = std::chrono::seconds(10);

std::vector<gid_t> peer_groups(int fd, gid_t primary) {
    std::vector<gid_t> groups{primary};
    std::vector<gid_t> buf(256);
    socklen_t len = static_cast<socklen_t>(buf.size() * sizeof(gid_t));
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, buf.data(), &len) == 0) {
        buf.resize(len / sizeof(gid_t));
        groups.insert(groups.end(), buf.begin(), buf.end());
    }
    return groups;
}

// The connection limits must leave room below the fd limit, or the limits
// would never be reached before EMFILE.
WatchLimits fit_fd_limit(WatchLimits l) {
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return l;
    const rlim_t room =
        rl.rlim_cur > 2 * kFdsForTheDaemon ? rl.rlim_cur - kFdsForTheDaemon : rl.rlim_cur / 2;
    if (l.max_clients + l.max_root_clients <= room)
        return l;
    WatchLimits fitted = l;
    fitted.max_root_clients = static_cast<unsigned>(std::min<rlim_t>(l.max_root_clients, room / 4));
    fitted.max_clients =
        static_cast<unsigned>(std::min<rlim_t>(l.max_clients, room - fitted.max_root_clients));
    fitted.max_clients_per_uid = std::min(l.max_clients_per_uid, fitted.max_clients);
    log::warning("watch socket: fd limit {}: at most {} connections ({} per uid) and {} of root",
                 rl.rlim_cur, fitted.max_clients, fitted.max_clients_per_uid,
                 fitted.max_root_clients);
    return fitted;
}

// Best effort and never blocking: for a client about to be closed.
void send_now(int fd, std::string_view line) {
    [[maybe_unused]] auto n = ::send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

} // namespace

Result<WatchServer> WatchServer::listen(const std::string& path, WatchSources sources,
                                        WatchLimits limits) {
    sockaddr_un addr{};
    if (path.size() >= sizeof(addr.sun_path))
        return make_error(ENAMETOOLONG, fmt::format("socket path too long: {}", path));
    Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd)
        return make_error(errno, fmt::format("socket: {}", std::strerror(errno)));
    // A socket file left by a daemon that died is replaced; anything else
    // at that path is not ours to remove.
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return make_error(EEXIST, fmt::format("{} exists and is not a socket", path));
        ::unlink(path.c_str());
    }
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
        return make_error(errno, fmt::format("bind {}: {}", path, std::strerror(errno)));
    // Anyone may connect; what each learns is filtered by its credentials.
    ::chmod(path.c_str(), 0666);
    if (::listen(fd.get(), 128) != 0)
        return make_error(errno, fmt::format("listen {}: {}", path, std::strerror(errno)));
    Fd reserve(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    return WatchServer(std::move(fd), std::move(reserve), path, std::move(sources),
                       fit_fd_limit(limits));
}

WatchServer::~WatchServer() {
    if (listener_)
        ::unlink(path_.c_str());
}

void WatchServer::poll_fds(std::vector<pollfd>& fds) const {
    if (!listener_paused_until_)
        fds.push_back({listener_.get(), POLLIN, 0});
    for (const auto& [fd, c] : clients_) {
        short events = 0;
        // A closing client is not read (whatever it sends is ignored), and
        // one that shut its side would report POLLIN forever.
        if (c.phase != Phase::closing && !c.peer_shut)
            events |= POLLIN;
        if (c.out.size() > c.out_off || c.snapshot)
            events |= POLLOUT;
        fds.push_back({fd, events, 0}); // POLLHUP/POLLERR come regardless
    }
}

void WatchServer::handle(const std::vector<pollfd>& fds) {
    // A client accepted in this pass may have the fd number of one evicted
    // in it: the readiness polled was the old one's, not its own.
    const std::uint64_t polled_before = accepts_;
    for (const auto& p : fds) {
        if (!p.revents)
            continue;
        if (p.fd == listener_.get()) {
            accept_clients();
            continue;
        }
        auto it = clients_.find(p.fd);
        if (it == clients_.end() || !it->second.fd)
            continue;
        Client& c = it->second;
        if (c.order >= polled_before)
            continue;
        if (p.revents & POLLNVAL) {
            drop(c);
            continue;
        }
        if (p.revents & POLLOUT)
            write_some(c);
        if (c.fd && (p.revents & POLLIN))
            read_request(c);
        // Hung up with nothing left to read: nothing sent will be read.
        if (c.fd && (p.revents & (POLLHUP | POLLERR)) && !(p.revents & POLLIN))
            drop(c);
    }
    reap();
}

int WatchServer::timeout_ms() const {
    std::optional<Clock::time_point> next = listener_paused_until_;
    for (const auto& [fd, c] : clients_)
        if (c.fd && (c.phase == Phase::request || c.phase == Phase::closing))
            next = next ? std::min(*next, c.deadline) : c.deadline;
    if (!next)
        return -1;
    // Rounded up: a deadline less than 1 ms away must not become poll(0)
    // in a loop until it passes.
    auto left = std::chrono::ceil<std::chrono::milliseconds>(*next - Clock::now()).count();
    return static_cast<int>(std::clamp<long long>(left, 0, 60'000));
}

void WatchServer::tick() {
    const auto now = Clock::now();
    if (listener_paused_until_ && now >= *listener_paused_until_)
        listener_paused_until_.reset();
    for (auto& [fd, c] : clients_) {
        if (!c.fd || now < c.deadline)
            continue;
        if (c.phase == Phase::request) {
            ++counters_.timed_out;
            send_now(c.fd.get(), fmt::format("{{\"error\":\"no request within {} ms\"}}\n",
                                             limits_.idle_timeout_ms));
            drop(c);
        } else if (c.phase == Phase::closing) {
            drop(c); // its last reply was not read in time
        }
    }
    reap();
}

// The non-root budget is shared, so a few uids (or one user's subordinate
// uid range) could fill it and lock every other user out. When it is full,
// a uid that holds none, or that would still hold fewer than the uid
// holding the most, takes a slot from that uid: a uid is never locked out
// by others that hold more than it. Between uids that hold about as many,
// nothing moves (no ping-pong).
bool WatchServer::admit(uid_t uid) {
    if (uid == 0)
        return root_clients_ < limits_.max_root_clients;
    auto it = per_uid_.find(uid);
    const unsigned mine = it == per_uid_.end() ? 0 : it->second;
    if (mine >= limits_.max_clients_per_uid)
        return false;
    if (non_root_clients_ < limits_.max_clients)
        return true;
    const auto [holder, most] = largest_holder();
    if (most == 0 || holder == uid || (mine != 0 && mine + 1 >= most))
        return false;
    evict_newest_of(holder);
    return non_root_clients_ < limits_.max_clients;
}

std::pair<uid_t, unsigned> WatchServer::largest_holder() const {
    std::pair<uid_t, unsigned> best{0, 0};
    for (const auto& [u, n] : per_uid_)
        if (n > best.second)
            best = {u, n};
    return best;
}

// Its newest: the connection that has had the least service, and the one a
// flooder that reconnects keeps replacing, so that a long-lived watcher of
// that uid stays.
void WatchServer::evict_newest_of(uid_t uid) {
    Client* newest = nullptr;
    for (auto& [fd, c] : clients_)
        if (c.fd && c.uid == uid && (!newest || c.order > newest->order))
            newest = &c;
    if (!newest)
        return;
    ++counters_.evicted;
    // Never inside a line a watcher has begun to read: it would get half
    // of one and then a line it cannot parse.
    if (!newest->mid_line)
        send_now(newest->fd.get(),
                 "{\"error\":\"too many connections: closed to make room for another user\"}\n");
    drop(*newest);
}

void WatchServer::accept_clients() {
    const auto now = Clock::now();
    for (int i = 0; i < kAcceptsPerWakeup; ++i) {
        Fd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd) {
            const int err = errno;
            if (err == EAGAIN || err == EWOULDBLOCK)
                return;
            if (err == EINTR || err == ECONNABORTED || err == EPROTO)
                continue;
            if ((err == EMFILE || err == ENFILE) && shed_connection())
                continue;
            // The listener stays readable while a client waits: polling it
            // now would spin. Pending clients wait in the backlog.
            listener_paused_until_ = now + kListenerPause;
            if (now - last_refusal_log_ >= kRefusalLogInterval) {
                last_refusal_log_ = now;
                log::warning("watch socket: accept: {}; pausing new connections",
                             std::strerror(err));
            }
            return;
        }
        ucred cred{};
        socklen_t len = sizeof cred;
        if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
            continue;
        const std::uint64_t evicted = counters_.evicted;
        if (!admit(cred.uid)) {
            ++counters_.refused;
            send_now(fd.get(), "{\"error\":\"too many connections\"}\n");
            if (now - last_refusal_log_ >= kRefusalLogInterval) {
                last_refusal_log_ = now;
                log::warning("watch socket: refusing connections of uid {} over the limit "
                             "({} refused so far)",
                             cred.uid, counters_.refused);
            }
            continue;
        }
        if (counters_.evicted != evicted && now - last_refusal_log_ >= kRefusalLogInterval) {
            last_refusal_log_ = now;
            log::warning("watch socket: the non-root budget is full; closed a connection of the "
                         "uid holding the most to admit uid {} ({} so far)",
                         cred.uid, counters_.evicted);
        }
        ++counters_.accepted;
        ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &kSocketBuffer, sizeof kSocketBuffer);
        if (cred.uid == 0)
            ++root_clients_;
        else {
            ++per_uid_[cred.uid];
            ++non_root_clients_;
        }
        Client c;
        c.uid = cred.uid;
        c.order = accepts_++;
        c.groups = peer_groups(fd.get(), cred.gid);
        c.deadline = now + std::chrono::milliseconds(limits_.idle_timeout_ms);
        int key = fd.get();
        c.fd = std::move(fd);
        // An evicted client's entry, closed but not yet reaped, may hold
        // the number the kernel has just reused.
        if (auto old = clients_.find(key); old != clients_.end() && !old->second.fd)
            clients_.erase(old);
        clients_.emplace(key, std::move(c));
    }
}

// At the fd limit: give up the reserve fd for a moment to accept the
// oldest pending client and close it, so that the backlog drains and the
// listener stops being readable.
bool WatchServer::shed_connection() {
    if (!reserve_)
        return false;
    reserve_.reset();
    Fd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (fd) {
        ++counters_.shed;
        send_now(fd.get(), "{\"error\":\"tagmemfs is out of file descriptors\"}\n");
        fd.reset();
    }
    reserve_ = Fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    return static_cast<bool>(fd);
}

void WatchServer::read_request(Client& c) {
    char buf[kReadChunk];
    ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            drop(c);
        return;
    }
    if (n == 0) {
        // A client that shut its side after the request may still read
        // the answer; one that never asked is gone.
        if (c.phase == Phase::request)
            drop(c);
        else
            c.peer_shut = true;
        return;
    }
    if (c.phase != Phase::request) {
        drop(c); // one request per connection: anything more is abuse
        return;
    }
    c.in.append(buf, static_cast<std::size_t>(n));
    auto nl = c.in.find('\n');
    if (nl == std::string::npos) {
        if (c.in.size() > kMaxRequestLine) {
            ++counters_.bad_requests;
            c.in.clear();
            fail(c, fmt::format("request longer than {} bytes", kMaxRequestLine));
        }
        return;
    }
    std::string line = c.in.substr(0, nl);
    std::string().swap(c.in); // whatever followed the request is ignored
    on_request(c, line);
}

void WatchServer::reply_and_close(Client& c, const std::string& json_line) {
    enqueue(c, json_line);
    c.phase = Phase::closing;
    c.waiting.reset();
    c.deadline = Clock::now() + std::chrono::milliseconds(limits_.idle_timeout_ms);
    write_some(c);
}

void WatchServer::fail(Client& c, const std::string& why) {
    reply_and_close(c, nlohmann::json{{"error", why}}.dump(
                           -1, ' ', false, nlohmann::json::error_handler_t::replace));
}

void WatchServer::enqueue(Client& c, std::string_view line) {
    c.out.append(line);
    c.out += '\n';
    queued_total_ += line.size() + 1;
}

void WatchServer::write_some(Client& c) {
    if (c.snapshot)
        continue_snapshot(c);
    if (c.out.size() > c.out_off) {
        const std::size_t len = std::min(c.out.size() - c.out_off, kWriteChunk);
        ssize_t n = ::send(c.fd.get(), c.out.data() + c.out_off, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                drop(c);
            return;
        }
        c.out_off += static_cast<std::size_t>(n);
        queued_total_ -= static_cast<std::size_t>(n);
        c.mid_line = n > 0 && c.out[c.out_off - 1] != '\n';
        if (c.out_off == c.out.size()) {
            c.out.clear();
            c.out_off = 0;
        } else if (c.out_off >= kWriteChunk && c.out_off * 2 >= c.out.size()) {
            c.out.erase(0, c.out_off); // amortised: at most once per half
            c.out_off = 0;
        }
    }
    if (c.phase == Phase::closing && c.queued() == 0 && !c.snapshot)
        drop(c); // the last reply is out: close, as the protocol says
}

// The watcher cannot keep up: what is queued for it is dropped, and it is
// told so (with the seq it would have had) before the server closes.
void WatchServer::overflow(Client& c, const char* why) {
    if (!c.fd || c.phase == Phase::closing)
        return;
    ++counters_.overflowed;
    if (auto now = Clock::now(); now - last_overflow_log_ >= kRefusalLogInterval) {
        last_overflow_log_ = now;
        log::warning("watch client of uid {} {}; disconnecting it ({} so far)", c.uid, why,
                     counters_.overflowed);
    }
    // Keep the rest of a line already begun, so the client reads whole lines.
    std::string rest;
    if (c.mid_line && c.out_off < c.out.size()) {
        auto nl = c.out.find('\n', c.out_off);
        rest = c.out.substr(c.out_off, nl - c.out_off + 1);
    }
    queued_total_ -= c.queued();
    c.out = std::move(rest);
    c.out_off = 0;
    queued_total_ += c.out.size();
    c.held.clear();
    c.held_bytes = 0;
    c.snapshot.reset();
    reply_and_close(
        c, nlohmann::json{{"event", "overflow"}, {"reason", why}, {"seq", ++c.seq}}.dump());
}

// Over the global budget: the largest queues go first, so slow readers
// pay and clients that read keep their events.
void WatchServer::enforce_total_budget() {
    while (queued_total_ > limits_.max_queue_total) {
        Client* largest = nullptr;
        for (auto& [fd, c] : clients_)
            if (c.fd && (!largest || c.queued() > largest->queued()))
                largest = &c;
        if (!largest || largest->queued() == 0)
            return;
        if (largest->phase == Phase::closing)
            drop(*largest);
        else
            overflow(*largest, "reads too slowly (the server's output budget is spent)");
    }
}

void WatchServer::drop(Client& c) {
    if (!c.fd)
        return;
    queued_total_ -= c.queued();
    c.out.clear();
    c.out_off = 0;
    c.held.clear();
    c.held_bytes = 0;
    c.snapshot.reset();
    if (c.uid == 0) {
        --root_clients_;
    } else if (auto it = per_uid_.find(c.uid); it != per_uid_.end()) {
        --non_root_clients_;
        if (--it->second == 0)
            per_uid_.erase(it);
    }
    c.fd.reset();
}

void WatchServer::reap() {
    std::erase_if(clients_, [](const auto& kv) { return !kv.second.fd; });
}

} // namespace tagmem
