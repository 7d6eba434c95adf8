// SPDX-License-Identifier: Apache-2.0
// Checks for text that tagmem takes from files and passes on to people, logs,
// JSON and the user database: tag names and owner/group names from
// tagmem.conf, uid and gid numbers. The file is root's, but what it says is
// shown to every user of the mount and to terminals, so a malformed value is
// refused with a message instead of being passed on (an escape sequence in a
// name would reach every `tagmem list`; "4294967296" must not wrap to uid 0).
#pragma once

#include "result.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace tagmem {

// Valid UTF-8 holding no control character: none of C0 (including NUL, tab
// and newline), DEL or C1, nor the line/paragraph separators and the bidi
// embedding, override and isolate marks, which reorder what a terminal shows.
Status check_display_text(std::string_view text);

// A uid or gid written as a number: decimal digits only, no sign, blanks or
// leading zero, at most 4294967294 (4294967295 is (uid_t)-1, which chown()
// and setresuid() take to mean "leave unchanged": never an owner).
Result<std::uint32_t> parse_account_id(std::string_view text);

// An owner or group as configured: a number as parse_account_id() takes it,
// or a name that the user database could hold (display text, 1 to 256
// bytes, no blank, ':' or ',', not starting with '-').
Status check_account_name(std::string_view name);

// The text with every byte that check_display_text() would refuse written
// as \xNN (and '\\' doubled), for messages that quote a refused value.
std::string escaped_for_display(std::string_view text);

// True when the text is all decimal digits, i.e. meant as a number.
bool is_account_number(std::string_view text);

} // namespace tagmem
