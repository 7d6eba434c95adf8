// SPDX-License-Identifier: Apache-2.0
// parse_request: every local user may write anything to the watch socket.
#include "fuzz_check.hpp"
#include "watch_protocol.hpp"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view line(reinterpret_cast<const char*>(data), size);
    auto req = tagmem::parse_request(line);
    if (!req) {
        // The message goes back to the client as JSON: it must say something
        // and be dumpable without replacing bytes (it echoes at most a
        // sanitized part of the input).
        FUZZ_CHECK(!req.error().message.empty());
        bool dumped = true;
        try {
            (void)nlohmann::json{{"error", req.error().message}}.dump();
        } catch (const nlohmann::json::exception&) {
            dumped = false;
        }
        FUZZ_CHECK(dumped);
        return 0;
    }
    FUZZ_CHECK(size <= tagmem::kMaxRequestLine);
    const bool needs_tag = req->op == tagmem::WatchOp::wait || req->op == tagmem::WatchOp::show;
    FUZZ_CHECK(needs_tag == req->tag.has_value());
    // Accepted: the op's name is one the protocol knows, and the tag is
    // what the request names, in any case spelling.
    FUZZ_CHECK(std::string_view(tagmem::to_string(req->op)) != "?");
    if (req->tag) {
        auto j = nlohmann::json::parse(line.begin(), line.end(), nullptr, false);
        bool same = false;
        if (j.is_discarded()) { // only a trailing \r can make the line differ
            std::string_view trimmed = line.substr(0, line.size() - 1);
            j = nlohmann::json::parse(trimmed.begin(), trimmed.end(), nullptr, false);
        }
        if (j.is_object() && j["tag"].is_string())
            same = tagmem::Uuid::parse(j["tag"].get<std::string>()).value_or({}) == *req->tag;
        FUZZ_CHECK(same);
    }
    return 0;
}
