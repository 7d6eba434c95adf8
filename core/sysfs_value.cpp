// SPDX-License-Identifier: Apache-2.0
#include "sysfs_value.hpp"

#include <fmt/format.h>

#include <cctype>
#include <charconv>
#include <limits>

namespace tagmem {

std::string_view trim_attr(std::string_view text) {
    auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
    while (!text.empty() && blank(text.front()))
        text.remove_prefix(1);
    while (!text.empty() && blank(text.back()))
        text.remove_suffix(1);
    return text;
}

Result<std::uint64_t> parse_u64(std::string_view raw) {
    auto text = trim_attr(raw);
    int base = 10;
    if (text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
        base = 16;
        text.remove_prefix(2);
    }
    std::uint64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, base);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size())
        return make_error(EINVAL, fmt::format("not an unsigned number: '{}'", trim_attr(raw)));
    return value;
}

Result<std::int64_t> parse_i64(std::string_view raw) {
    auto text = trim_attr(raw);
    std::int64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, 10);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size())
        return make_error(EINVAL, fmt::format("not a number: '{}'", text));
    return value;
}

Result<DevNumber> parse_dev_number(std::string_view raw) {
    auto text = trim_attr(raw);
    auto colon = text.find(':');
    if (colon == std::string_view::npos)
        return make_error(EINVAL, fmt::format("not a device number 'major:minor': '{}'", text));
    auto major = parse_u64(text.substr(0, colon));
    auto minor = parse_u64(text.substr(colon + 1));
    // Only the kernel's own spelling, %u:%u: no hex, no blanks, no signs.
    if (!major || !minor || text.find_first_not_of("0123456789:") != std::string_view::npos ||
        *major > std::numeric_limits<unsigned>::max() ||
        *minor > std::numeric_limits<unsigned>::max())
        return make_error(EINVAL, fmt::format("not a device number 'major:minor': '{}'", text));
    return DevNumber{static_cast<unsigned>(*major), static_cast<unsigned>(*minor)};
}

Result<std::optional<Uuid>> parse_tag_attr(std::string_view raw) {
    auto text = trim_attr(raw);
    if (text == "0")
        return std::optional<Uuid>{};
    auto uuid = Uuid::parse(text);
    if (!uuid)
        return uuid.error();
    if (uuid->is_nil())
        return std::optional<Uuid>{};
    return std::optional<Uuid>{*uuid};
}

std::string_view parent_path(std::string_view path) {
    auto slash = path.rfind('/');
    return slash == std::string_view::npos ? std::string_view() : path.substr(0, slash);
}

std::string_view base_name(std::string_view path) {
    auto slash = path.rfind('/');
    return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

bool is_numbered_name(std::string_view name, std::string_view prefix) {
    if (!name.starts_with(prefix))
        return false;
    name.remove_prefix(prefix.size());
    auto dot = name.find('.');
    auto digits = [](std::string_view d) {
        return !d.empty() && d.find_first_not_of("0123456789") == std::string_view::npos;
    };
    return dot != std::string_view::npos && digits(name.substr(0, dot)) &&
           digits(name.substr(dot + 1));
}

Result<Uuid> parse_uuid_attr(std::string_view raw) {
    return Uuid::parse(trim_attr(raw));
}

Result<bool> parse_bool(std::string_view raw) {
    auto text = trim_attr(raw);
    std::string lower;
    for (char c : text)
        lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    if (lower == "1" || lower == "true" || lower == "yes" || lower == "on")
        return true;
    if (lower == "0" || lower == "false" || lower == "no" || lower == "off")
        return false;
    return make_error(EINVAL, fmt::format("not a boolean (1/0, true/false, yes/no): '{}'", text));
}

Result<std::uint64_t> parse_size(std::string_view raw) {
    auto text = trim_attr(raw);
    std::uint64_t mult = 1;
    if (!text.empty()) {
        switch (std::toupper(static_cast<unsigned char>(text.back()))) {
        case 'K': mult = 1ull << 10; break;
        case 'M': mult = 1ull << 20; break;
        case 'G': mult = 1ull << 30; break;
        case 'T': mult = 1ull << 40; break;
        default: break;
        }
        if (mult != 1)
            text.remove_suffix(1);
    }
    auto n = parse_u64(text);
    if (!n)
        return make_error(EINVAL,
                          fmt::format("not a size (bytes, or with K/M/G/T): '{}'", trim_attr(raw)));
    if (*n > std::numeric_limits<std::uint64_t>::max() / mult)
        return make_error(ERANGE, fmt::format("size too large: '{}'", trim_attr(raw)));
    return *n * mult;
}

} // namespace tagmem
