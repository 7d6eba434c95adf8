// SPDX-License-Identifier: Apache-2.0
// tagmem vm-attach / vm-detach: add a tag's capacity to a running guest's
// CXL device (declared at boot by `vm-args --cxl`) and release it, over
// QEMU's QMP (core/vm_cxl.hpp, docs/vm.md).
#pragma once

#include "query.hpp"

#include <optional>
#include <string>

namespace tagmem::cli {

struct VmAttachOptions {
    std::string qmp;               // the guest's QMP socket
    std::optional<std::string> id; // the cxl-type3 device id; default from the tag
    std::string tag;
    double wait_s = 5;   // vm-detach: how long the guest has to give it back
    bool follow = false; // vm-attach: then forward the tag's errors, release it when it goes
};

int cmd_vm_attach(const QueryOptions& query, const VmAttachOptions& opt);
int cmd_vm_detach(const VmAttachOptions& opt);

} // namespace tagmem::cli
