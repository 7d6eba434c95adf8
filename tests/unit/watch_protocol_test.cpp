// SPDX-License-Identifier: Apache-2.0
// parse_request: the watch socket's requests, from any bytes.
#include "watch_protocol.hpp"

#include <gtest/gtest.h>

#include <string>

namespace tagmem {
namespace {

constexpr const char* kTag = "aaaaaaaa-0000-4000-8000-00000000000a";

TEST(WatchProtocol, ParsesEveryOp) {
    for (auto [text, op] :
         {std::pair{"watch", WatchOp::watch}, {"stats", WatchOp::stats}, {"list", WatchOp::list}}) {
        auto r = parse_request(std::string("{\"op\":\"") + text + "\"}");
        ASSERT_TRUE(r) << text;
        EXPECT_EQ(r->op, op);
        EXPECT_FALSE(r->tag);
    }
    for (auto op : {"wait", "show"}) {
        auto r = parse_request(std::string("{\"op\":\"") + op + "\",\"tag\":\"" + kTag + "\"}\r");
        ASSERT_TRUE(r) << op;
        EXPECT_EQ(r->tag->str(), kTag);
        EXPECT_STREQ(to_string(r->op), op);
    }
}

TEST(WatchProtocol, UnknownKeysAreIgnored) {
    EXPECT_TRUE(parse_request(R"({"op":"watch","since":7})"));
}

TEST(WatchProtocol, RefusesWhatIsNotARequest) {
    const std::string cases[] = {
        "",
        "garbage",
        "[1,2]",
        R"({"op":5})",
        R"({"op":"format-disk"})",
        R"({"op":"wait"})",
        R"({"op":"wait","tag":"x"})",
        R"({"op":"wait","tag":1e99999})",
        R"({"op":"show","tag":123456789012345678901234567890})",
        "{\"op\":\"\xff\xfe\"}",
        "{\"op\":\"watch\"} trailing",
        std::string(5000, '['),
        "{\"op\":\"watch\",\"pad\":\"" + std::string(kMaxRequestLine, ' ') + "\"}",
    };
    for (const auto& c : cases) {
        auto r = parse_request(c);
        EXPECT_FALSE(r) << c.substr(0, 60);
        if (!r) {
            EXPECT_EQ(r.error().code, EINVAL);
            EXPECT_FALSE(r.error().message.empty());
        }
    }
}

TEST(WatchProtocol, AnUnknownOpIsEchoedShortAndPrintable) {
    auto r = parse_request("{\"op\":\"\\u0001" + std::string(100, 'z') + "\"}");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "unknown op '?" + std::string(31, 'z') + "'");
}

} // namespace
} // namespace tagmem
