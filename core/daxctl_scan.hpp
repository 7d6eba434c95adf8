// SPDX-License-Identifier: Apache-2.0
// Enumeration of dax devices through libdaxctl, the same library daxctl(1)
// uses, so tagmem and the admin's tools always agree on what exists.
#pragma once

#include "device.hpp"
#include "result.hpp"

#include <vector>

namespace tagmem {

class HostOs;

struct DaxctlScan {
    std::vector<DaxDevice> devices;
    // Devices the bus lists but libdaxctl could not read (it drops a device
    // whose /dev node or size is missing without a word); reported so that
    // nothing vanishes silently.
    std::vector<DeviceIssue> unreadable;
};

Result<DaxctlScan> scan_dax_devices(HostOs& os);

// Reads one device the way libdaxctl reads it, for hotplug: libdaxctl has no
// way to refresh a single device, and a full enumeration of a host with
// thousands of devices is far too slow to run per event. ENOENT when the
// device is gone. The synthetic-host tests check that both readers agree.
Result<DaxDevice> read_dax_device(const std::string& name, HostOs& os);

// devdax, system-ram (bound to kmem) or disabled (no driver).
DevMode read_dev_mode(const std::string& sysfs_path, HostOs& os);

} // namespace tagmem
