// SPDX-License-Identifier: Apache-2.0
// tagmem wait and tagmem watch: clients of tagmemfs's watch socket
// (docs/watch-protocol.md).
#pragma once

#include <optional>
#include <string>

namespace tagmem::cli {

struct WatchOptions {
    std::string mount_point = "/run/tagmem";
    std::string socket_path; // empty: <mount point>.sock
    bool json = false;
    std::optional<double> timeout_s;
    std::string tag_text;

    std::string socket() const { return socket_path.empty() ? mount_point + ".sock" : socket_path; }
};

int cmd_wait(const WatchOptions& opt);
int cmd_watch(const WatchOptions& opt);

} // namespace tagmem::cli
