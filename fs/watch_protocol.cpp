// SPDX-License-Identifier: Apache-2.0
#include "watch_protocol.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <array>
#include <utility>

namespace tagmem {
namespace {

constexpr std::array<std::pair<const char*, WatchOp>, 5> kOps{{{"watch", WatchOp::watch},
                                                               {"wait", WatchOp::wait},
                                                               {"stats", WatchOp::stats},
                                                               {"list", WatchOp::list},
                                                               {"show", WatchOp::show}}};

Error invalid(std::string message) {
    return make_error(EINVAL, std::move(message));
}

} // namespace

const char* to_string(WatchOp op) {
    for (const auto& [name, value] : kOps)
        if (value == op)
            return name;
    return "?";
}

Result<WatchRequest> parse_request(std::string_view line) {
    if (line.size() > kMaxRequestLine)
        return invalid(fmt::format("request longer than {} bytes", kMaxRequestLine));
    if (!line.empty() && line.back() == '\r') // a client typing through socat or nc -C
        line.remove_suffix(1);
    // No exceptions (allow_exceptions = false): malformed JSON, invalid
    // UTF-8 in a string and trailing bytes all give a discarded value.
    auto req = nlohmann::json::parse(line.begin(), line.end(), nullptr, false);
    if (req.is_discarded())
        return invalid("not valid JSON (one object per line, UTF-8)");
    if (!req.is_object())
        return invalid("expected a JSON object such as {\"op\":\"watch\"}");
    auto op_it = req.find("op");
    if (op_it == req.end() || !op_it->is_string())
        return invalid("expected \"op\": one of watch, wait, list, show, stats");
    const auto& op_text = op_it->get_ref<const std::string&>();
    WatchRequest r;
    bool known = false;
    for (const auto& [name, value] : kOps)
        if (op_text == name) {
            r.op = value;
            known = true;
        }
    if (!known) {
        // Echo at most a short, printable prefix: the reply is JSON-escaped
        // anyway, but a client's garbage has no business filling logs.
        std::string shown = op_text.substr(0, 32);
        for (char& c : shown)
            if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f)
                c = '?';
        return invalid(fmt::format("unknown op '{}'", shown));
    }
    if (r.op == WatchOp::wait || r.op == WatchOp::show) {
        auto tag_it = req.find("tag");
        if (tag_it == req.end() || !tag_it->is_string())
            return invalid(fmt::format("{} needs \"tag\": \"<uuid>\"", op_text));
        auto tag = Uuid::parse(tag_it->get_ref<const std::string&>());
        if (!tag)
            return invalid("\"tag\" is not a UUID (8-4-4-4-12 hex digits)");
        r.tag = *tag;
    }
    return r;
}

} // namespace tagmem
