// SPDX-License-Identifier: Apache-2.0
#include "discovery.hpp"

#include "host_state.hpp"

namespace tagmem {

Result<ScanResult> scan_host(const Config& config, HostOs& os) {
    // The same path the daemon takes, so tagmem and tagmemfs never disagree.
    HostState state(os);
    auto delta = state.rescan(config);
    if (!delta)
        return delta.error();
    return state.snapshot();
}

} // namespace tagmem
