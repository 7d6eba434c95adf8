// SPDX-License-Identifier: Apache-2.0
#include "watch_client.hpp"

#include "exit_codes.hpp"
#include "fd.hpp"
#include "result.hpp"
#include "uuid.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>

namespace tagmem::cli {
namespace {

int fail(int code, const std::string& message) {
    fmt::print(stderr, "tagmem: {}\n", message);
    return code;
}

Result<Fd> connect_to(const std::string& path) {
    sockaddr_un addr{};
    if (path.size() >= sizeof(addr.sun_path))
        return make_error(ENAMETOOLONG, fmt::format("socket path too long: {}", path));
    Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd)
        return make_error(errno, std::strerror(errno));
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
        return make_error(errno, fmt::format("cannot reach tagmemfs at {}: {} (is it running?)",
                                             path, std::strerror(errno)));
    return fd;
}

bool send_line(const Fd& fd, const nlohmann::json& request) {
    std::string line = request.dump() + "\n";
    return ::send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(line.size());
}

// Reads lines until fn returns false, the peer closes (false), or the
// deadline passes (nullopt).
template <typename Fn>
std::optional<bool> read_lines(const Fd& fd, std::optional<double> timeout_s, Fn&& fn) {
    using clock = std::chrono::steady_clock;
    auto deadline =
        timeout_s ? std::optional(clock::now() + std::chrono::duration_cast<clock::duration>(
                                                     std::chrono::duration<double>(*timeout_s)))
                  : std::nullopt;
    std::string buf;
    char chunk[4096];
    for (;;) {
        int wait_ms = -1;
        if (deadline) {
            auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - clock::now());
            if (left.count() <= 0)
                return std::nullopt;
            wait_ms = static_cast<int>(left.count());
        }
        pollfd p{fd.get(), POLLIN, 0};
        int r = ::poll(&p, 1, wait_ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0)
            return std::nullopt;
        ssize_t n = ::read(fd.get(), chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        buf.append(chunk, static_cast<std::size_t>(n));
        std::size_t nl;
        while ((nl = buf.find('\n')) != std::string::npos) {
            std::string line = buf.substr(0, nl);
            buf.erase(0, nl + 1);
            if (!fn(line))
                return true;
        }
    }
}

} // namespace

int cmd_wait(const WatchOptions& opt) {
    auto tag = Uuid::parse(opt.tag_text);
    if (!tag)
        return fail(kExitUsage, tag.error().message);
    if (opt.timeout_s && *opt.timeout_s < 0)
        return fail(kExitUsage, "--timeout must not be negative");
    auto fd = connect_to(opt.socket());
    if (!fd)
        return fail(kExitError, fd.error().message);
    if (!send_line(*fd, {{"op", "wait"}, {"tag", tag->str()}}))
        return fail(kExitError, "tagmemfs closed the connection");
    std::string path, error;
    auto done = read_lines(*fd, opt.timeout_s, [&](const std::string& line) {
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_object() && j.value("event", "") == "ready") {
            path = j.value("path", "");
            return false;
        }
        if (j.is_object() && j.contains("error"))
            error = j["error"].is_string() ? j["error"].get<std::string>() : line;
        return error.empty();
    });
    if (!done)
        return fail(kExitTimeout, fmt::format("tag {} did not become usable within {} s",
                                              tag->str(), *opt.timeout_s));
    if (!error.empty())
        return fail(kExitError, fmt::format("tagmemfs: {}", error));
    if (path.empty())
        return fail(kExitError, "tagmemfs closed the connection");
    fmt::print("{}\n", path);
    return kExitOk;
}

int cmd_watch(const WatchOptions& opt) {
    auto fd = connect_to(opt.socket());
    if (!fd)
        return fail(kExitError, fd.error().message);
    if (!send_line(*fd, {{"op", "watch"}}))
        return fail(kExitError, "tagmemfs closed the connection");
    std::setvbuf(stdout, nullptr, _IOLBF, 0); // one line per change, as it happens
    auto done = read_lines(*fd, std::nullopt, [&](const std::string& line) {
        if (opt.json) {
            fmt::print("{}\n", line);
            return true;
        }
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (!j.is_object())
            return true;
        if (j.contains("error")) {
            fmt::print(stderr, "tagmem: tagmemfs: {}\n", j["error"].dump());
            return false;
        }
        fmt::print("{:<8} {} {} {}\n", j.value("event", "?"), j.value("tag", "?"),
                   j.value("device", "") == "" ? "-" : j.value("device", ""),
                   j.value("state", "?"));
        return true;
    });
    (void)done;
    return fail(kExitError, "tagmemfs closed the connection");
}

} // namespace tagmem::cli
