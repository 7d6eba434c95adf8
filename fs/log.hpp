// SPDX-License-Identifier: Apache-2.0
// Logging of tagmemfs: fmt-formatted lines on stderr, with a syslog priority
// prefix ("<3>") when stderr is the journal (JOURNAL_STREAM set), so that
// journald files them at the right level; syslog(3) once daemonized.
#pragma once

#include <fmt/format.h>

#include <optional>
#include <string_view>

namespace tagmem::log {

enum class Level { error = 3, warning = 4, info = 6, debug = 7 };

std::optional<Level> parse_level(std::string_view text);
void set_level(Level level);
void use_syslog(); // after daemonizing: stderr is /dev/null then
bool enabled(Level level);
void write(Level level, std::string_view message);

template <typename... Args> void error(fmt::format_string<Args...> f, Args&&... args) {
    write(Level::error, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args> void warning(fmt::format_string<Args...> f, Args&&... args) {
    write(Level::warning, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args> void info(fmt::format_string<Args...> f, Args&&... args) {
    if (enabled(Level::info))
        write(Level::info, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args> void debug(fmt::format_string<Args...> f, Args&&... args) {
    if (enabled(Level::debug))
        write(Level::debug, fmt::format(f, std::forward<Args>(args)...));
}
// At a level chosen at run time; formatted only if it will be written.
template <typename... Args> void at(Level level, fmt::format_string<Args...> f, Args&&... args) {
    if (enabled(level))
        write(level, fmt::format(f, std::forward<Args>(args)...));
}

} // namespace tagmem::log
