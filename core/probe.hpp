// SPDX-License-Identifier: Apache-2.0
// Reads what libdaxctl does not know about one device: its tag (DCD uuid
// attribute, or the NVDIMM namespace behind it), extents, NUMA and HMAT data;
// and checks that the device is what it claims to be before anything may
// present it.
#pragma once

#include "device.hpp"
#include "result.hpp"

namespace tagmem {

class HostOs;

// Fails (with the reason) when the device must be rejected: its device number
// disagrees with /dev/<name>, the node is not a character device of the dax
// major, or its tag attribute is malformed.
Result<ProbedDevice> probe_device(const DaxDevice& dev, HostOs& os);

// The checks alone, shared by probe_device and whoever re-validates a node.
Status verify_device_node(const DaxDevice& dev, HostOs& os);

// Extents of a DC region (empty for other regions).
Result<std::vector<Extent>> read_region_extents(const std::string& region_path, HostOs& os);

Performance read_node_performance(int node, HostOs& os);

} // namespace tagmem
