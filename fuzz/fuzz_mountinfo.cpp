// SPDX-License-Identifier: Apache-2.0
// The /proc/self/mountinfo reader (fs/mountinfo): tagmemfs refuses to serve
// a mount whose options it cannot confirm there, so the parser must neither
// crash on nor misread a line (mount points are chosen by whoever mounts).
#include "fuzz_check.hpp"
#include "mountinfo.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    auto found = tagmem::find_mount_in(text, "/run/tagmem");
    // The top mount is the last line naming that mount point.
    std::optional<tagmem::MountInfo> last;
    std::string_view rest = text;
    while (!rest.empty()) {
        auto nl = rest.find('\n');
        auto line = tagmem::parse_mountinfo_line(rest.substr(0, nl));
        if (line && line->mount_point == "/run/tagmem")
            last = line->info;
        rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
    }
    FUZZ_CHECK(found.has_value() == last.has_value());
    if (found) {
        FUZZ_CHECK(found->fstype == last->fstype && found->source == last->source);
        FUZZ_CHECK(found->mount_opts == last->mount_opts && found->super_opts == last->super_opts);
        for (const auto& o : found->mount_opts)
            FUZZ_CHECK(!o.empty() && o.find(',') == std::string::npos);
    }
    return 0;
}
