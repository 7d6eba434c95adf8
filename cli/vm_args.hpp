// SPDX-License-Identifier: Apache-2.0
// tagmem vm-args: the QEMU arguments (or libvirt XML) that hand tags to a
// guest (core/vm_handoff.hpp, docs/vm.md).
#pragma once

#include "query.hpp"

#include <optional>
#include <string>
#include <vector>

namespace tagmem::cli {

struct VmArgsOptions {
    std::vector<std::string> tags;
    std::string memory = "1G";
    unsigned cpus = 1;
    std::string machine = "pc";
    std::string format = "shell"; // shell, lines, json
    bool libvirt = false;
    bool kernel_cmdline = false;
    bool hotplug = false;
    bool cxl = false;     // a CXL DC device per tag instead (vm-attach adds the capacity)
    std::string cdat_dir; // --cxl: write each tag's CDAT (host figures) here
    std::optional<std::string> user; // whose access to check; default the caller
};

int cmd_vm_args(const QueryOptions& query, const VmArgsOptions& opt);

} // namespace tagmem::cli
