// SPDX-License-Identifier: Apache-2.0
// Uuid::parse: tags come from sysfs, the configuration, the command line and
// watch requests.
#include "fuzz_check.hpp"
#include "uuid.hpp"

#include <cctype>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    auto uuid = tagmem::Uuid::parse(text);
    if (!uuid) {
        FUZZ_CHECK(!uuid.error().message.empty());
        return 0;
    }
    // Accepted: exactly the 8-4-4-4-12 form, whose canonical spelling is the
    // input in lower case and parses back to the same tag.
    const std::string canonical = uuid->str();
    FUZZ_CHECK(canonical.size() == 36 && text.size() == 36);
    for (std::size_t i = 0; i < text.size(); ++i)
        FUZZ_CHECK(canonical[i] == std::tolower(static_cast<unsigned char>(text[i])));
    auto again = tagmem::Uuid::parse(canonical);
    FUZZ_CHECK(again && *again == *uuid);
    return 0;
}
