// SPDX-License-Identifier: Apache-2.0
#include "qmp_client.hpp"

#include "fd.hpp"

#include <fmt/format.h>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace tagmem::cli {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// Reads one JSON line; QMP replies are single lines.
class LineReader {
  public:
    LineReader(int fd, Clock::time_point deadline) : fd_(fd), deadline_(deadline) {}

    Result<json> next() {
        for (;;) {
            if (auto nl = buf_.find('\n'); nl != std::string::npos) {
                std::string line = buf_.substr(0, nl);
                buf_.erase(0, nl + 1);
                json j = json::parse(line, nullptr, false);
                if (j.is_discarded() || !j.is_object())
                    return make_error(EPROTO, "QMP: a reply that is not a JSON object");
                return j;
            }
            if (buf_.size() > (1u << 20))
                return make_error(EPROTO, "QMP: a reply line over 1 MiB");
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now());
            if (left.count() <= 0)
                return make_error(ETIMEDOUT, "QMP: no reply in time");
            pollfd p{fd_, POLLIN, 0};
            int n = ::poll(&p, 1, static_cast<int>(left.count()));
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                return sys_error("QMP: poll");
            if (n == 0)
                continue;
            char chunk[4096];
            ssize_t got = ::read(fd_, chunk, sizeof chunk);
            if (got < 0 && errno == EINTR)
                continue;
            if (got < 0)
                return sys_error("QMP: read");
            if (got == 0)
                return make_error(ECONNRESET, "QMP: QEMU closed the connection");
            buf_.append(chunk, static_cast<std::size_t>(got));
        }
    }

  private:
    int fd_;
    Clock::time_point deadline_;
    std::string buf_;
};

Status send_all(int fd, const std::string& text) {
    std::size_t done = 0;
    while (done < text.size()) {
        ssize_t n = ::send(fd, text.data() + done, text.size() - done, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return sys_error("QMP: send");
        done += static_cast<std::size_t>(n);
    }
    return Ok{};
}

// The reply to the command just sent: events ("event") are skipped.
Result<json> reply(LineReader& in, const std::string& name) {
    for (;;) {
        auto j = in.next();
        if (!j)
            return j.error();
        if (auto r = j->find("return"); r != j->end())
            return *r;
        if (auto e = j->find("error"); e != j->end())
            return make_error(
                kQmpErrorReply,
                fmt::format("QMP {}: {}: {}", name, e->value("class", "?"), e->value("desc", "?")));
    }
}

} // namespace

Result<json> qmp_execute(const std::string& socket_path, const json& command,
                         std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (socket_path.size() >= sizeof addr.sun_path)
        return make_error(ENAMETOOLONG, fmt::format("QMP socket path too long: {}", socket_path));
    std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
    Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd)
        return sys_error("QMP: socket");
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
        const int err = errno;
        return make_error(err, fmt::format("QMP socket {}: {}", socket_path, std::strerror(err)));
    }
    LineReader in(fd.get(), deadline);
    auto greeting = in.next();
    if (!greeting)
        return greeting.error();
    if (!greeting->contains("QMP"))
        return make_error(EPROTO, fmt::format("{} does not greet as QMP", socket_path));
    // Capabilities negotiation first: QEMU takes no command before it.
    if (auto sent = send_all(fd.get(), std::string(R"({"execute":"qmp_capabilities"})") + "\n");
        !sent)
        return sent.error();
    if (auto r = reply(in, "qmp_capabilities"); !r)
        return r.error();
    if (auto sent = send_all(fd.get(), command.dump() + "\n"); !sent)
        return sent.error();
    return reply(in, command.value("execute", "?"));
}

} // namespace tagmem::cli
