// SPDX-License-Identifier: Apache-2.0
#include "mountinfo.hpp"

#include <vector>

namespace tagmem {
namespace {

// mountinfo escapes blanks and backslashes in paths as \ooo.
std::string unescape_mountinfo(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 3 < s.size()) {
            int v = 0;
            bool ok = true;
            for (std::size_t k = 1; k <= 3; ++k) {
                char c = s[i + k];
                ok = ok && c >= '0' && c <= '7';
                v = v * 8 + (c - '0');
            }
            if (ok) {
                out.push_back(static_cast<char>(v));
                i += 3;
                continue;
            }
        }
        out.push_back(s[i]);
    }
    return out;
}

// The kernel separates fields with single spaces; blanks inside fields are
// escaped. Any run of blanks is taken as one separator, as istream >> did.
std::vector<std::string_view> fields_of(std::string_view line) {
    std::vector<std::string_view> out;
    std::size_t i = 0;
    auto blank = [](char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
    };
    while (i < line.size()) {
        while (i < line.size() && blank(line[i]))
            ++i;
        std::size_t start = i;
        while (i < line.size() && !blank(line[i]))
            ++i;
        if (i > start)
            out.push_back(line.substr(start, i - start));
    }
    return out;
}

} // namespace

std::set<std::string> split_options(std::string_view text) {
    std::set<std::string> out;
    std::size_t start = 0;
    while (start <= text.size()) {
        auto comma = text.find(',', start);
        auto item = text.substr(start, comma == std::string_view::npos ? text.npos : comma - start);
        if (!item.empty())
            out.emplace(item);
        if (comma == std::string_view::npos)
            break;
        start = comma + 1;
    }
    return out;
}

std::optional<MountinfoLine> parse_mountinfo_line(std::string_view line) {
    auto f = fields_of(line);
    if (f.size() < 5)
        return std::nullopt;
    MountinfoLine out;
    out.mount_point = unescape_mountinfo(f[4]);
    std::string_view opts = f.size() > 5 ? f[5] : std::string_view();
    // Optional fields (shared:N, master:N, ...) run up to the lone "-".
    std::size_t i = 6;
    while (i < f.size() && f[i] != "-")
        ++i;
    ++i;
    auto next = [&]() { return i < f.size() ? std::string(f[i++]) : std::string(); };
    out.info.fstype = next();
    out.info.source = next();
    out.info.mount_opts = split_options(opts);
    out.info.super_opts = split_options(next());
    return out;
}

std::optional<MountInfo> find_mount_in(std::string_view mountinfo, std::string_view mount_point) {
    std::optional<MountInfo> found;
    while (!mountinfo.empty()) {
        auto nl = mountinfo.find('\n');
        auto line = mountinfo.substr(0, nl);
        mountinfo.remove_prefix(nl == std::string_view::npos ? mountinfo.size() : nl + 1);
        if (auto m = parse_mountinfo_line(line); m && m->mount_point == mount_point)
            found = std::move(m->info); // later lines are mounted on top
    }
    return found;
}

} // namespace tagmem
