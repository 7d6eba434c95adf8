// SPDX-License-Identifier: Apache-2.0
#include "log.hpp"

#include <syslog.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>

namespace tagmem::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::info)};
std::atomic<bool> g_syslog{false};
const bool g_journal = std::getenv("JOURNAL_STREAM") != nullptr;

const char* level_name(Level level) {
    switch (level) {
    case Level::error: return "error";
    case Level::warning: return "warning";
    case Level::info: return "info";
    case Level::debug: return "debug";
    }
    return "?";
}

} // namespace

std::optional<Level> parse_level(std::string_view text) {
    if (text == "error")
        return Level::error;
    if (text == "warning" || text == "warn")
        return Level::warning;
    if (text == "info")
        return Level::info;
    if (text == "debug")
        return Level::debug;
    return std::nullopt;
}

void set_level(Level level) {
    g_level = static_cast<int>(level);
}

void use_syslog() {
    openlog("tagmemfs", LOG_PID, LOG_DAEMON);
    g_syslog = true;
}

bool enabled(Level level) {
    return static_cast<int>(level) <= g_level.load();
}

void write(Level level, std::string_view message) {
    if (!enabled(level))
        return;
    if (g_syslog) {
        syslog(static_cast<int>(level), "%.*s", static_cast<int>(message.size()), message.data());
        return;
    }
    // One write() per line so that lines from several threads never mix.
    std::string line =
        g_journal ? fmt::format("<{}>{}\n", static_cast<int>(level), message)
                  : fmt::format("tagmemfs[{}]: {}: {}\n", ::getpid(), level_name(level), message);
    [[maybe_unused]] auto n = ::write(STDERR_FILENO, line.data(), line.size());
}

} // namespace tagmem::log
