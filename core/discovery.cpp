// SPDX-License-Identifier: Apache-2.0
#include "discovery.hpp"

#include "daxctl_scan.hpp"
#include "probe.hpp"
#include "records.hpp"

namespace tagmem {

Result<ScanResult> scan_host(const Config& config, HostOs& os) {
    auto scan = scan_dax_devices(os);
    if (!scan)
        return scan.error();
    std::vector<ProbedDevice> probed;
    std::vector<DeviceIssue> rejected = std::move(scan->unreadable);
    probed.reserve(scan->devices.size());
    ScanCache cache(os);
    for (const auto& dev : scan->devices) {
        auto p = probe_device(dev, os, cache);
        if (p)
            probed.push_back(std::move(*p));
        else
            rejected.push_back({dev.name, p.error().message});
    }
    return build_records(std::move(probed), std::move(rejected), config, os);
}

} // namespace tagmem
