// SPDX-License-Identifier: Apache-2.0
// What one client, one user and all clients together may cost the watch
// socket (fs/watch_server.hpp): tagmemfs options, documented in tagmemfs(8).
#pragma once

#include <cstddef>

namespace tagmem {

// Daemon options (tagmemfs(8)); the defaults suit a host with a few hundred
// local users and the default fd limit of 1024.
struct WatchLimits {
    unsigned max_clients = 256;              // non-root connections in total
    unsigned max_clients_per_uid = 32;       // non-root connections of one uid
    unsigned max_root_clients = 64;          // root's own budget: admin tools still get in
    unsigned idle_timeout_ms = 10'000;       // to send the request, or to read a final reply
    std::size_t max_queue = 4u << 20;        // output queued for one watcher
    std::size_t max_queue_total = 64u << 20; // output queued for all clients
};

} // namespace tagmem
