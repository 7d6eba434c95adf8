// SPDX-License-Identifier: Apache-2.0
// tagmem.conf from text (parse_config, which load_config uses after reading
// the file): inih's reader, tagmem's line feeder around it, and every value
// parser of the sections.
#include "config.hpp"
#include "fuzz_check.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    tagmem::Config c = tagmem::parse_config(text, "fuzz.conf");
    FUZZ_CHECK(c.origin == "fuzz.conf");
    for (const auto& e : c.errors)
        FUZZ_CHECK(e.starts_with("fuzz.conf"));
    // What the daemon would apply: only well-formed sections.
    for (const auto& [tag, t] : c.tags) {
        FUZZ_CHECK(tag == t.tag && !tag.is_nil());
        FUZZ_CHECK(t.line >= 1);
        FUZZ_CHECK(!t.mode || *t.mode <= 0777);
        FUZZ_CHECK(!t.match_range || t.match_range->start <= t.match_range->end);
        FUZZ_CHECK(!t.match_node || (*t.match_node >= 0 && *t.match_node <= 4095));
        FUZZ_CHECK(t.name.size() <= 128 && t.name.find_first_of("\n\r\t") == std::string::npos);
        FUZZ_CHECK(!t.owner || !t.owner->empty());
        FUZZ_CHECK(!t.group || !t.group->empty());
        FUZZ_CHECK(c.find(tag) == &t);
    }
    return 0;
}
