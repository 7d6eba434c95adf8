// SPDX-License-Identifier: Apache-2.0
// Strings that thousands of records share: one immortal copy of each
// distinct value, and a pointer per holder (8 bytes instead of 32). For
// values drawn from a small set that only an administrator grows: region
// paths, configured owner and group names, namespace names.
#pragma once

#include <compare>
#include <ostream>
#include <string>
#include <string_view>

namespace tagmem {

// The one copy of this value; thread-safe, never freed.
const std::string& intern_string(std::string_view value);

class Interned {
  public:
    Interned() : s_(&intern_string({})) {}
    Interned(std::string_view value) : s_(&intern_string(value)) {} // NOLINT: implicit by design
    Interned(const char* value) : Interned(std::string_view(value)) {}
    Interned(const std::string& value) : Interned(std::string_view(value)) {}

    const std::string& str() const { return *s_; }
    operator const std::string&() const { return *s_; } // NOLINT: reads like a string
    bool empty() const { return s_->empty(); }

    // One copy per value: equal values, equal pointers.
    bool operator==(const Interned& o) const { return s_ == o.s_; }
    std::strong_ordering operator<=>(const Interned& o) const { return *s_ <=> *o.s_; }
    friend bool operator==(const Interned& a, std::string_view b) { return *a.s_ == b; }
    friend bool operator==(const Interned& a, const char* b) { return *a.s_ == b; }
    friend std::ostream& operator<<(std::ostream& out, const Interned& s) { return out << *s.s_; }

  private:
    const std::string* s_;
};

} // namespace tagmem
