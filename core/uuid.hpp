// SPDX-License-Identifier: Apache-2.0
// A tag is a UUID. Kept as 16 bytes so that maps keyed by tag are cheap and
// so that every spelling (upper case, braces are NOT accepted) of one tag
// compares equal; the canonical text form is lower-case 8-4-4-4-12.
#pragma once

#include "result.hpp"

#include <array>
#include <compare>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace tagmem {

class Uuid {
  public:
    Uuid() = default;
    explicit Uuid(const std::array<std::uint8_t, 16>& bytes) : bytes_(bytes) {}

    // Accepts exactly the 36-character 8-4-4-4-12 form, either case.
    static Result<Uuid> parse(std::string_view text);

    std::string str() const;
    bool is_nil() const;
    const std::array<std::uint8_t, 16>& bytes() const { return bytes_; }

    auto operator<=>(const Uuid&) const = default;

  private:
    std::array<std::uint8_t, 16> bytes_{};
};

} // namespace tagmem

template <> struct std::hash<tagmem::Uuid> {
    std::size_t operator()(const tagmem::Uuid& u) const noexcept {
        // The bytes of a UUID are already well mixed (random or hashed).
        std::size_t h = 0;
        for (auto b : u.bytes())
            h = h * 131 + b;
        return h;
    }
};
