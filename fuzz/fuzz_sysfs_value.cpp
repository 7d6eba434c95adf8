// SPDX-License-Identifier: Apache-2.0
// The parsers of sysfs attribute text (core/sysfs_value): every value tagmem
// reads from sysfs goes through one of them, and a synthetic or broken host
// can put anything there. Each input is given to all of them.
#include "fuzz_check.hpp"
#include "sysfs_value.hpp"

#include <fmt/format.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

using namespace tagmem;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);

    auto trimmed = trim_attr(text);
    FUZZ_CHECK(trimmed.size() <= text.size());
    FUZZ_CHECK(trim_attr(trimmed) == trimmed);

    if (auto u = parse_u64(text))
        FUZZ_CHECK(parse_u64(fmt::format("{}\n", *u)).value_or(~*u) == *u);
    if (auto i = parse_i64(text))
        FUZZ_CHECK(parse_i64(fmt::format("{}", *i)).value_or(~*i) == *i);
    if (auto dev = parse_dev_number(text)) {
        auto again = parse_dev_number(fmt::format("{}:{}\n", dev->major, dev->minor));
        FUZZ_CHECK(again && *again == *dev);
    }
    if (auto tag = parse_tag_attr(text); tag && *tag) {
        FUZZ_CHECK(!(*tag)->is_nil());
        auto again = parse_tag_attr((*tag)->str() + "\n");
        FUZZ_CHECK(again && *again == *tag);
    }
    if (auto uuid = parse_uuid_attr(text))
        FUZZ_CHECK(parse_uuid_attr(uuid->str()).value_or(Uuid{}) == *uuid);
    (void)parse_bool(text);
    if (auto s = parse_size(text)) {
        auto plain = parse_u64(text);
        FUZZ_CHECK(!plain || *plain == *s); // without a suffix, bytes
    }
    if (is_numbered_name(text, "dax"))
        FUZZ_CHECK(text.starts_with("dax") && text.find('.') != std::string_view::npos);
    auto parent = parent_path(text);
    auto base = base_name(text);
    FUZZ_CHECK(base.find('/') == std::string_view::npos);
    FUZZ_CHECK(parent.size() + base.size() + (parent.size() + base.size() < text.size()) ==
               text.size());
    return 0;
}
