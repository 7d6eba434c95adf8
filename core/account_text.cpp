// SPDX-License-Identifier: Apache-2.0
#include "account_text.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <limits>

namespace tagmem {
namespace {

// Decodes one UTF-8 sequence at text[i]; returns its length and code point,
// or 0 for an invalid one (truncated, overlong, surrogate, above U+10FFFF).
std::size_t decode_utf8(std::string_view text, std::size_t i, char32_t& cp) {
    const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[i + k]); };
    const unsigned char b0 = byte(0);
    std::size_t len = 0;
    char32_t min = 0;
    if (b0 < 0x80) {
        cp = b0;
        return 1;
    } else if ((b0 & 0xe0) == 0xc0) {
        len = 2, cp = b0 & 0x1f, min = 0x80;
    } else if ((b0 & 0xf0) == 0xe0) {
        len = 3, cp = b0 & 0x0f, min = 0x800;
    } else if ((b0 & 0xf8) == 0xf0) {
        len = 4, cp = b0 & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (i + len > text.size())
        return 0;
    for (std::size_t k = 1; k < len; ++k) {
        if ((byte(k) & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (byte(k) & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

bool is_control(char32_t cp) {
    return cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 ||
           (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

} // namespace

Status check_display_text(std::string_view text) {
    for (std::size_t i = 0; i < text.size();) {
        char32_t cp = 0;
        std::size_t len = decode_utf8(text, i, cp);
        if (len == 0)
            return make_error(EILSEQ, fmt::format("not valid UTF-8 (byte {} of the value)", i + 1));
        if (is_control(cp))
            return make_error(EINVAL, fmt::format("holds the control character U+{:04X} (byte "
                                                  "{} of the value)",
                                                  static_cast<std::uint32_t>(cp), i + 1));
        i += len;
    }
    return Ok{};
}

std::string escaped_for_display(std::string_view text) {
    std::string out;
    for (std::size_t i = 0; i < text.size();) {
        char32_t cp = 0;
        std::size_t len = decode_utf8(text, i, cp);
        if (len == 0 || is_control(cp)) {
            for (std::size_t k = 0; k < std::max<std::size_t>(len, 1); ++k)
                out += fmt::format("\\x{:02x}", static_cast<unsigned char>(text[i + k]));
            i += std::max<std::size_t>(len, 1);
            continue;
        }
        if (cp == '\\')
            out += '\\';
        out.append(text.substr(i, len));
        i += len;
    }
    return out;
}

bool is_account_number(std::string_view text) {
    return !text.empty() && text.find_first_not_of("0123456789") == std::string_view::npos;
}

Result<std::uint32_t> parse_account_id(std::string_view text) {
    constexpr std::uint64_t kMax = std::numeric_limits<std::uint32_t>::max() - 1;
    if (!is_account_number(text) || (text.size() > 1 && text[0] == '0'))
        return make_error(EINVAL, "a uid or gid is written in decimal digits, with no sign, "
                                  "blank or leading zero");
    std::uint64_t v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v, 10);
    if (ec != std::errc() || end != text.data() + text.size() || v > kMax)
        return make_error(ERANGE, fmt::format("{} is out of range: a uid or gid is at most {} "
                                              "(4294967295 means 'no id')",
                                              text, kMax));
    return static_cast<std::uint32_t>(v);
}

Status check_account_name(std::string_view name) {
    if (is_account_number(name)) {
        if (auto id = parse_account_id(name); !id)
            return id.error();
        return Ok{};
    }
    constexpr std::size_t kMaxName = 256; // LOGIN_NAME_MAX
    if (name.empty() || name.size() > kMaxName)
        return make_error(EINVAL, fmt::format("a user or group name is 1 to {} bytes", kMaxName));
    if (auto text = check_display_text(name); !text)
        return text.error();
    if (name.find_first_of(" :,") != std::string_view::npos || name.front() == '-')
        return make_error(EINVAL, "a user or group name holds no blank, ':' or ',' and does "
                                  "not start with '-'");
    return Ok{};
}

} // namespace tagmem
