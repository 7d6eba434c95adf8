// SPDX-License-Identifier: Apache-2.0
// The requests of the watch socket (docs/watch-protocol.md), parsed by a pure
// function: any local user can write to the socket, so the parser must give
// a clear error for any byte sequence and never throw. fuzz/ feeds it random
// input.
#pragma once

#include "result.hpp"
#include "uuid.hpp"

#include <cstddef>
#include <optional>
#include <string_view>

namespace tagmem {

// The longest request line, without its newline. Every request is a few
// dozen bytes; a longer line is refused and the connection closed.
inline constexpr std::size_t kMaxRequestLine = 1024;

enum class WatchOp { watch, wait, stats, list, show };
const char* to_string(WatchOp op);

struct WatchRequest {
    WatchOp op = WatchOp::watch;
    std::optional<Uuid> tag; // wait, show: always set
};

// One request line (without the newline). Errors carry EINVAL and a message
// meant for the client's error reply.
Result<WatchRequest> parse_request(std::string_view line);

} // namespace tagmem
