// SPDX-License-Identifier: Apache-2.0
// tagmemfs as a whole: scan, mount, serve, rescan on SIGHUP, unmount on
// SIGTERM/SIGINT.
#pragma once

#include "log.hpp"
#include "uevents.hpp"
#include "watch_limits.hpp"

#include <string>
#include <vector>

namespace tagmem {

struct DaemonOptions {
    std::string mount_point = "/run/tagmem";
    std::string config_path;                // empty: the default path, optional
    std::vector<std::string> mount_options; // extra -o, checked
    bool foreground = false;
    log::Level log_level = log::Level::info;
    unsigned threads = 0;    // 0: libfuse's default worker pool
    std::string socket_path; // empty: <mount point>.sock
    std::string nodes_dir;   // empty: <mount point>.nodes (the tmpfs behind each data)
    UeventSource uevents = UeventSource::automatic;
    unsigned extent_poll_ms = 1000;       // DCD extents raise no uevent; 0: never poll
    std::string cdi_dir = "/var/run/cdi"; // where the CDI spec goes; empty: none
    WatchLimits watch;                    // what watch socket clients may cost
};

// Returns the process exit code.
int run_daemon(const DaemonOptions& options);

} // namespace tagmem
