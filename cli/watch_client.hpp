// SPDX-License-Identifier: Apache-2.0
// Clients of tagmemfs's watch socket (docs/watch-protocol.md): tagmem wait
// and tagmem watch, and the one-shot questions list, show and resolve ask.
#pragma once

#include "result.hpp"

#include <nlohmann/json.hpp>

#include <functional>
#include <optional>
#include <string>

namespace tagmem::cli {

struct WatchOptions {
    std::string mount_point = "/run/tagmem";
    std::string socket_path; // empty: <mount point>.sock
    bool json = false;
    bool snapshot = false; // watch: print the tags that exist before the changes
    std::optional<double> timeout_s;
    std::string tag_text;
    // wait: for the tag's health rather than its readiness (docs/health.md).
    bool degraded = false;          // until it is degraded (at once if it is)
    bool health_change = false;     // until its health next changes
    bool release_requested = false; // until its DCD capacity is asked back, or it is gone

    std::string socket() const { return socket_path.empty() ? mount_point + ".sock" : socket_path; }
};

int cmd_wait(const WatchOptions& opt);
// wait --degraded / --health-change: prints one JSON line, the tag's health
// ({"tag","health","bad_ranges"}), when it happens.
int cmd_wait_health(const WatchOptions& opt);
// wait --release-requested: prints one JSON line ({"tag","event","device",
// "state"}, event "release-requested" or "removed") when the orchestrator
// asks for the tag's DCD capacity back (at once if it has) or the tag goes.
// A tag that does not exist when the snapshot ends is gone already.
int cmd_wait_release(const WatchOptions& opt);
// Prints changes; with opt.snapshot, first the tags as they are.
int cmd_watch(const WatchOptions& opt);

// The daemon's watch stream (docs/watch-protocol.md), one parsed line at a
// time, until on_line returns false (then true) or the daemon closes
// (false). An error when tagmemfs cannot be reached.
Result<bool> watch_stream(const std::string& socket_path,
                          const std::function<bool(const nlohmann::json&)>& on_line);

// Sends one request and returns the one JSON line the daemon answers (which
// may be {"error":...}). Error code ENOENT: no socket there, so no daemon
// was ever started; any other error: a daemon should be there but did not
// answer.
Result<nlohmann::json> ask_daemon(const std::string& socket_path, const nlohmann::json& request,
                                  double timeout_s);

} // namespace tagmem::cli
