// SPDX-License-Identifier: Apache-2.0
// The reader of /proc/self/mountinfo, as pure functions of its text, so that
// the checks of the mount's options rest on a parser that is fuzzed
// (fuzz/fuzz_mountinfo.cpp) and the file is read in one place (mount.cpp).
#pragma once

#include <optional>
#include <set>
#include <string>
#include <string_view>

namespace tagmem {

// The top mount at a path, as /proc/self/mountinfo describes it.
struct MountInfo {
    std::string fstype;
    std::string source;
    std::set<std::string> mount_opts;
    std::set<std::string> super_opts;
};

// One line: "id parent major:minor root mountpoint opts [optional...] - fstype
// source superopts". The mount point unescaped (\ooo), or nullopt for a line
// too short to hold one.
struct MountinfoLine {
    std::string mount_point;
    MountInfo info;
};
std::optional<MountinfoLine> parse_mountinfo_line(std::string_view line);

// The last (top) mount at mount_point in the whole text, if any.
std::optional<MountInfo> find_mount_in(std::string_view mountinfo, std::string_view mount_point);

// "a,b,,c" -> {a, b, c}.
std::set<std::string> split_options(std::string_view text);

} // namespace tagmem
