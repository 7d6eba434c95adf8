// SPDX-License-Identifier: Apache-2.0
// Enumeration of dax devices through libdaxctl, the same library daxctl(1)
// uses, so tagmem and the admin's tools always agree on what exists.
#pragma once

#include "device.hpp"
#include "result.hpp"

#include <map>
#include <string>
#include <vector>

namespace tagmem {

class HostOs;

struct DaxctlScan {
    std::vector<DaxDevice> devices;
    // Devices the bus lists but libdaxctl could not read (it drops a device
    // whose /dev node or size is missing without a word); reported so that
    // nothing vanishes silently.
    std::vector<DeviceIssue> unreadable;
    // Devices whose reading failed for a reason other than their being gone
    // (is_transient): what was known of them stands until a retry.
    std::map<std::string, Error> failed;
    // False when the bus itself could not be listed: devices libdaxctl
    // dropped are then missing from both lists, unnoticed.
    bool complete = true;
};

Result<DaxctlScan> scan_dax_devices(HostOs& os);

// libdaxctl's enumeration alone (RealHostOs::daxctl_devices).
Result<std::vector<DaxDevice>> daxctl_enumerate();

// Binds one disabled dax device to device_dax the way `daxctl
// enable-device` does (daxctl_dev_enable_devdax: the driver's module is
// loaded, the device bound, nothing onlined). ENOENT when libdaxctl does
// not list the device; the error libdaxctl gave, or ENXIO when the device
// is still not enabled afterwards.
Status daxctl_enable_devdax(const std::string& name);

// Reads one device the way libdaxctl reads it, for hotplug: libdaxctl has no
// way to refresh a single device, and a full enumeration of a host with
// thousands of devices is far too slow to run per event. ENOENT when the
// device is gone, EINVAL when the name is not a dax device's, ENODEV when
// it cannot be presented; other errors as the host gave them (is_transient).
// The synthetic-host tests check that both readers agree.
Result<DaxDevice> read_dax_device(const std::string& name, HostOs& os);

// devdax, system-ram (bound to kmem) or disabled (no driver).
Result<DevMode> read_dev_mode(const std::string& sysfs_path, HostOs& os);

} // namespace tagmem
