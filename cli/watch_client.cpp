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
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        const int err = errno;
        return make_error(err, fmt::format("cannot reach tagmemfs at {}: {} (is it running?)", path,
                                           std::strerror(err)));
    }
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
        // Searched from where the last search ended: a list reply of many
        // megabytes is one line.
        std::size_t from = buf.size();
        buf.append(chunk, static_cast<std::size_t>(n));
        std::size_t nl;
        while ((nl = buf.find('\n', from)) != std::string::npos) {
            std::string line = buf.substr(0, nl);
            buf.erase(0, nl + 1);
            from = 0;
            if (!fn(line))
                return true;
        }
    }
}

// "degraded: 4096+512 at 2026-12-01T19:05:02Z, ..." or "ok".
std::string health_text(const nlohmann::json& j) {
    std::string out = j.value("health", "?");
    const auto bad = j.value("bad_ranges", nlohmann::json::array());
    for (std::size_t i = 0; i < bad.size() && bad.is_array(); ++i) {
        const auto& b = bad[i];
        if (!b.is_object())
            continue;
        out += fmt::format("{} {}+{} since {}", i == 0 ? ":" : ",", b.value("offset", 0ull),
                           b.value("length", 0ull), b.value("first_seen", "?"));
    }
    if (j.contains("reason") && j["reason"].is_string())
        out += fmt::format(" (not read whole: {})", j["reason"].get<std::string>());
    return out;
}

// " revokes tagmem.io/tag=<tag>,... (252:1)": the CDI devices whose
// containers still hold the tag's old device number; they must be stopped
// (docs/containers.md). Empty when the line revokes nothing.
std::string revoked_text(const nlohmann::json& j) {
    auto r = j.find("cdi_revoked");
    if (r == j.end() || !r->is_object())
        return "";
    std::string names;
    const auto devices = r->value("devices", nlohmann::json::array());
    for (const auto& d : devices)
        if (d.is_string())
            names += (names.empty() ? "" : ",") + d.get<std::string>();
    return fmt::format(" revokes {} ({})", names, r->value("devno", "?"));
}

} // namespace

Result<bool> watch_stream(const std::string& socket_path,
                          const std::function<bool(const nlohmann::json&)>& on_line) {
    auto fd = connect_to(socket_path);
    if (!fd)
        return fd.error();
    if (!send_line(*fd, {{"op", "watch"}}))
        return make_error(ECONNRESET, "tagmemfs closed the connection");
    auto done = read_lines(*fd, std::nullopt, [&](const std::string& line) {
        auto j = nlohmann::json::parse(line, nullptr, false);
        return j.is_object() ? on_line(j) : true;
    });
    return done.value_or(false);
}

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

int cmd_wait_health(const WatchOptions& opt) {
    auto tag = Uuid::parse(opt.tag_text);
    if (!tag)
        return fail(kExitUsage, tag.error().message);
    if (opt.timeout_s && *opt.timeout_s < 0)
        return fail(kExitUsage, "--timeout must not be negative");
    if (opt.degraded && opt.health_change)
        return fail(kExitUsage, "--degraded and --health-change exclude each other");
    auto fd = connect_to(opt.socket());
    if (!fd)
        return fail(kExitError, fd.error().message);
    // The watch stream: the snapshot says whether the tag is degraded now
    // (its "exists" line), the "health" lines after it say when that changes.
    if (!send_line(*fd, {{"op", "watch"}}))
        return fail(kExitError, "tagmemfs closed the connection");
    const std::string want = tag->str();
    std::optional<nlohmann::json> found;
    bool degraded_now = false;
    std::string error;
    auto done = read_lines(*fd, opt.timeout_s, [&](const std::string& line) {
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (!j.is_object())
            return true;
        const std::string event = j.value("event", "");
        if (j.contains("error") || event == "overflow") {
            error = j.contains("error") ? j["error"].dump() : "dropped: " + j.value("reason", "?");
            return false;
        }
        if (j.value("tag", "") != want)
            return true;
        if (event == "exists" && opt.degraded && j.value("health", "") == "degraded") {
            degraded_now = true;
            return false;
        }
        if (event == "health" && (opt.health_change || j.value("health", "") == "degraded")) {
            found = nlohmann::json{{"tag", want},
                                   {"health", j.value("health", "")},
                                   {"bad_ranges", j.value("bad_ranges", nlohmann::json::array())}};
            if (j.contains("reason"))
                (*found)["reason"] = j["reason"];
            return false;
        }
        return true;
    });
    if (!done)
        return fail(kExitTimeout, fmt::format("the health of tag {} did not {} within {} s", want,
                                              opt.degraded ? "degrade" : "change", *opt.timeout_s));
    if (!error.empty())
        return fail(kExitError, fmt::format("tagmemfs: {}", error));
    if (degraded_now) {
        // The snapshot line says degraded; the ranges are in the tag's object.
        auto shown = ask_daemon(opt.socket(), {{"op", "show"}, {"tag", want}}, 10);
        if (!shown)
            return fail(kExitError, shown.error().message);
        auto h = shown->value("health", nlohmann::json::object());
        found = nlohmann::json{{"tag", want},
                               {"health", h.value("status", "degraded")},
                               {"bad_ranges", h.value("bad_ranges", nlohmann::json::array())}};
    }
    if (!found)
        return fail(kExitError, "tagmemfs closed the connection");
    fmt::print("{}\n", found->dump());
    return kExitOk;
}

int cmd_wait_release(const WatchOptions& opt) {
    auto tag = Uuid::parse(opt.tag_text);
    if (!tag)
        return fail(kExitUsage, tag.error().message);
    if (opt.timeout_s && *opt.timeout_s < 0)
        return fail(kExitUsage, "--timeout must not be negative");
    if (opt.degraded || opt.health_change)
        return fail(kExitUsage, "--release-requested excludes --degraded and --health-change");
    auto fd = connect_to(opt.socket());
    if (!fd)
        return fail(kExitError, fd.error().message);
    if (!send_line(*fd, {{"op", "watch"}}))
        return fail(kExitError, "tagmemfs closed the connection");
    const std::string want = tag->str();
    std::optional<nlohmann::json> found;
    bool seen = false;
    std::string error;
    auto done = read_lines(*fd, opt.timeout_s, [&](const std::string& line) {
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (!j.is_object())
            return true;
        const std::string event = j.value("event", "");
        if (j.contains("error") || event == "overflow") {
            error = j.contains("error") ? j["error"].dump() : "dropped: " + j.value("reason", "?");
            return false;
        }
        if (event == "snapshot-end" && !seen) {
            found = nlohmann::json{{"tag", want}, {"event", "removed"}};
            return false;
        }
        if (j.value("tag", "") != want)
            return true;
        seen = true;
        if (j.value("release_requested", false) || event == "removed") {
            found = nlohmann::json{{"tag", want},
                                   {"event", event == "removed" ? "removed" : "release-requested"},
                                   {"device", j.value("device", "")},
                                   {"state", j.value("state", "")}};
            return false;
        }
        return true;
    });
    if (!done)
        return fail(kExitTimeout,
                    fmt::format("nobody asked for tag {} back within {} s", want, *opt.timeout_s));
    if (!error.empty())
        return fail(kExitError, fmt::format("tagmemfs: {}", error));
    if (!found)
        return fail(kExitError, "tagmemfs closed the connection");
    fmt::print("{}\n", found->dump());
    return kExitOk;
}

int cmd_watch(const WatchOptions& opt) {
    auto fd = connect_to(opt.socket());
    if (!fd)
        return fail(kExitError, fd.error().message);
    if (!send_line(*fd, {{"op", "watch"}}))
        return fail(kExitError, "tagmemfs closed the connection");
    std::setvbuf(stdout, nullptr, _IOLBF, 0); // one line per change, as it happens
    // The daemon first sends the tags as they are ("exists" lines, then
    // "snapshot-end"), then changes; each line's seq is one more than the
    // last this watcher got, so a gap means lines were lost.
    std::uint64_t last_seq = 0;
    bool seq_checked = false; // daemons before the snapshot numbered all clients together
    std::string ended;
    auto done = read_lines(*fd, std::nullopt, [&](const std::string& line) {
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (!j.is_object())
            return true;
        const std::string event = j.value("event", "");
        if (j.contains("seq") && j["seq"].is_number_unsigned()) {
            auto seq = j["seq"].get<std::uint64_t>();
            if (seq_checked && seq != last_seq + 1)
                fmt::print(stderr, "tagmem: {} changes were lost\n", seq - last_seq - 1);
            last_seq = seq;
        }
        if (event == "snapshot-end")
            seq_checked = true;
        const bool initial = event == "exists" || event == "snapshot-end";
        if (event == "overflow") {
            ended = fmt::format("tagmemfs dropped this watcher: {}", j.value("reason", "?"));
        } else if (j.contains("error")) {
            ended =
                fmt::format("tagmemfs: {}", j["error"].is_string() ? j["error"].get<std::string>()
                                                                   : j["error"].dump());
        }
        if (initial && !opt.snapshot)
            return true;
        if (opt.json)
            fmt::print("{}\n", line);
        else if (ended.empty() && event == "health")
            fmt::print("{:<8} {} {} {} {}\n", event, j.value("tag", "?"),
                       j.value("device", "") == "" ? "-" : j.value("device", ""),
                       j.value("state", "?"), health_text(j));
        else if (ended.empty() && event != "snapshot-end")
            fmt::print(
                "{:<8} {} {} {}{}{}\n", event.empty() ? "?" : event, j.value("tag", "?"),
                j.value("device", "") == "" ? "-" : j.value("device", ""), j.value("state", "?"),
                j.value("health", "") == "" ? "" : " " + j.value("health", ""), revoked_text(j));
        return ended.empty();
    });
    (void)done;
    return fail(kExitError, ended.empty() ? "tagmemfs closed the connection" : ended);
}

Result<nlohmann::json> ask_daemon(const std::string& socket_path, const nlohmann::json& request,
                                  double timeout_s) {
    auto fd = connect_to(socket_path);
    if (!fd)
        return fd.error();
    if (!send_line(*fd, request))
        return make_error(EPIPE, fmt::format("tagmemfs at {} closed the connection", socket_path));
    std::optional<nlohmann::json> reply;
    auto done = read_lines(*fd, timeout_s, [&](const std::string& line) {
        reply = nlohmann::json::parse(line, nullptr, false);
        return false;
    });
    if (!done)
        return make_error(ETIMEDOUT, fmt::format("tagmemfs at {} did not answer within {} s",
                                                 socket_path, timeout_s));
    if (!reply)
        return make_error(EPIPE, fmt::format("tagmemfs at {} closed the connection", socket_path));
    if (!reply->is_object())
        return make_error(EPROTO,
                          fmt::format("tagmemfs at {} answered no JSON object", socket_path));
    return std::move(*reply);
}

} // namespace tagmem::cli
