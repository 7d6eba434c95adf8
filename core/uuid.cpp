// SPDX-License-Identifier: Apache-2.0
#include "uuid.hpp"

#include <fmt/format.h>

namespace tagmem {
namespace {

int hex_value(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool is_dash_position(std::size_t i) {
    return i == 8 || i == 13 || i == 18 || i == 23;
}

} // namespace

Result<Uuid> Uuid::parse(std::string_view text) {
    if (text.size() != 36)
        return make_error(EINVAL, fmt::format("not a UUID (expected 36 characters, got {}): '{}'",
                                              text.size(), text));
    std::array<std::uint8_t, 16> bytes{};
    std::size_t out = 0;
    for (std::size_t i = 0; i < text.size();) {
        if (is_dash_position(i)) {
            if (text[i] != '-')
                return make_error(EINVAL, fmt::format("not a UUID (no '-' at {}): '{}'", i, text));
            ++i;
            continue;
        }
        int hi = hex_value(text[i]);
        int lo = hex_value(text[i + 1]);
        if (hi < 0 || lo < 0)
            return make_error(EINVAL, fmt::format("not a UUID (bad hex digit): '{}'", text));
        bytes[out++] = static_cast<std::uint8_t>(hi << 4 | lo);
        i += 2;
    }
    return Uuid(bytes);
}

std::string Uuid::str() const {
    static constexpr char digits[] = "0123456789abcdef";
    std::string s;
    s.reserve(36);
    for (std::size_t i = 0; i < bytes_.size(); ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            s.push_back('-');
        s.push_back(digits[bytes_[i] >> 4]);
        s.push_back(digits[bytes_[i] & 0xf]);
    }
    return s;
}

bool Uuid::is_nil() const {
    for (auto b : bytes_)
        if (b != 0)
            return false;
    return true;
}

} // namespace tagmem
