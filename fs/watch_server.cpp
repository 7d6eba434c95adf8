// SPDX-License-Identifier: Apache-2.0
#include "watch_server.hpp"

#include "log.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace tagmem {
namespace {

constexpr std::size_t kMaxRequest = 4096;
// A watcher that reads nothing is cut off rather than allowed to grow the
// daemon without bound; 64 MiB holds hundreds of thousands of events.
constexpr std::size_t kMaxQueued = 64u << 20;

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

} // namespace

Result<WatchServer> WatchServer::listen(const std::string& path, const TagTree* tree,
                                        std::string mount_point,
                                        std::function<std::string()> stats) {
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
    return WatchServer(std::move(fd), path, tree, std::move(mount_point), std::move(stats));
}

WatchServer::~WatchServer() {
    if (listener_)
        ::unlink(path_.c_str());
}

void WatchServer::poll_fds(std::vector<pollfd>& fds) const {
    fds.push_back({listener_.get(), POLLIN, 0});
    for (const auto& [fd, c] : clients_)
        fds.push_back({fd, static_cast<short>(POLLIN | (c.out.empty() ? 0 : POLLOUT)), 0});
}

void WatchServer::handle(const std::vector<pollfd>& fds) {
    for (const auto& p : fds) {
        if (!p.revents)
            continue;
        if (p.fd == listener_.get()) {
            accept_clients();
            continue;
        }
        auto it = clients_.find(p.fd);
        if (it == clients_.end())
            continue;
        Client& c = it->second;
        if (p.revents & POLLOUT)
            flush(c);
        if (p.revents & (POLLIN | POLLHUP | POLLERR))
            read_request(c);
    }
    std::erase_if(clients_, [](const auto& kv) { return !kv.second.fd; });
}

void WatchServer::accept_clients() {
    for (;;) {
        Fd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd)
            return;
        ucred cred{};
        socklen_t len = sizeof cred;
        if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
            continue;
        Client c;
        c.uid = cred.uid;
        c.groups = peer_groups(fd.get(), cred.gid);
        int key = fd.get();
        c.fd = std::move(fd);
        clients_.emplace(key, std::move(c));
    }
}

void WatchServer::read_request(Client& c) {
    char buf[1024];
    for (;;) {
        ssize_t n = ::read(c.fd.get(), buf, sizeof buf);
        if (n > 0) {
            c.in.append(buf, static_cast<std::size_t>(n));
            std::size_t nl;
            while (c.fd && (nl = c.in.find('\n')) != std::string::npos) {
                std::string line = c.in.substr(0, nl);
                c.in.erase(0, nl + 1);
                on_request(c, line);
            }
            if (c.in.size() > kMaxRequest) {
                c.fd.reset();
                return;
            }
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        c.fd.reset(); // EOF or error: the client is gone
        return;
    }
}

void WatchServer::on_request(Client& c, const std::string& line) {
    auto req = nlohmann::json::parse(line, nullptr, false);
    auto fail = [&](const std::string& why) {
        send(c, nlohmann::json{{"error", why}}.dump());
        c.close_after_flush = true;
        flush(c);
    };
    if (!req.is_object() || !req.contains("op") || !req["op"].is_string())
        return fail("expected a JSON object with \"op\": \"watch\" or \"wait\"");
    const std::string op = req["op"];
    if (op == "watch") {
        c.watching = true;
        return;
    }
    if (op == "stats") {
        if (c.uid != 0)
            return fail("stats are for root");
        send(c, stats_ ? stats_() : std::string("{}"));
        c.close_after_flush = true;
        flush(c);
        return;
    }
    if (op != "wait")
        return fail(fmt::format("unknown op '{}'", op));
    if (!req.contains("tag") || !req["tag"].is_string())
        return fail("wait needs \"tag\": \"<uuid>\"");
    auto tag = Uuid::parse(req["tag"].get<std::string>());
    if (!tag)
        return fail(tag.error().message);
    c.waiting = *tag;
    // Already usable: answer at once. The check and the registration happen
    // on the thread that publishes changes, so no event can slip between.
    if (auto r = tree_->find(*tag); r && r->usable() && may_see(c, r->access)) {
        send(c, ready_line(*r));
        c.close_after_flush = true;
        flush(c);
    }
}

bool WatchServer::may_see(const Client& c, const Access& a) const {
    if (c.uid == 0)
        return true;
    if (c.uid == a.uid)
        return (a.mode & 0600) != 0;
    if (std::find(c.groups.begin(), c.groups.end(), a.gid) != c.groups.end())
        return (a.mode & 0060) != 0;
    return (a.mode & 0006) != 0;
}

std::string WatchServer::ready_line(const TagRecord& r) const {
    const std::string tag = r.tag.str();
    return nlohmann::json{{"event", "ready"},
                          {"tag", tag},
                          {"device", r.device() ? r.device()->dev.name : ""},
                          {"path", fmt::format("{}/{}/data", mount_point_, tag)}}
        .dump();
}

void WatchServer::publish(const std::vector<TagEvent>& events) {
    if (clients_.empty())
        return;
    for (const auto& e : events) {
        ++seq_;
        std::string line;
        for (auto& [fd, c] : clients_) {
            if (!c.fd || !may_see(c, e.access))
                continue;
            if (c.watching) {
                if (line.empty())
                    line = nlohmann::json{
                        {"event", to_string(e.kind)},
                        {"tag", e.tag.str()},
                        {"device", e.device},
                        {"state", e.state},
                        {"seq",
                         seq_}}.dump();
                send(c, line);
            }
            if (c.waiting && *c.waiting == e.tag && e.kind != TagEventKind::removed &&
                e.state == "ready") {
                if (auto r = tree_->find(e.tag); r && r->usable()) {
                    send(c, ready_line(*r));
                    c.close_after_flush = true;
                    c.waiting.reset();
                }
            }
        }
    }
    for (auto& [fd, c] : clients_)
        flush(c);
    std::erase_if(clients_, [](const auto& kv) { return !kv.second.fd; });
}

void WatchServer::send(Client& c, const std::string& json_line) {
    if (c.out.size() + json_line.size() > kMaxQueued) {
        log::warning("watch client uid {} reads too slowly; disconnecting it", c.uid);
        c.fd.reset();
        return;
    }
    c.out += json_line;
    c.out += '\n';
}

void WatchServer::flush(Client& c) {
    while (c.fd && !c.out.empty()) {
        ssize_t n = ::send(c.fd.get(), c.out.data(), c.out.size(), MSG_NOSIGNAL);
        if (n > 0) {
            c.out.erase(0, static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        c.fd.reset();
        return;
    }
    if (c.fd && c.out.empty() && c.close_after_flush)
        c.fd.reset();
}

} // namespace tagmem
