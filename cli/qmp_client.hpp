// SPDX-License-Identifier: Apache-2.0
// A minimal QMP client for vm-attach/vm-detach: one connection per command
// (a `-qmp unix:...,server=on,wait=off` socket takes a new client each
// time, and libvirt's QMP pass-through is the same protocol), the
// greeting, qmp_capabilities, then the command; asynchronous events are
// skipped.
#pragma once

#include "result.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <string>

namespace tagmem::cli {

// QEMU answered the command with an error: the code of the Error a failed
// qmp_execute gives then (any other code: no QEMU could be asked).
inline constexpr int kQmpErrorReply = EREMOTEIO;

// The command's "return" value. An error reply gives kQmpErrorReply with
// QEMU's class and description; a socket that cannot be reached or a reply
// that is not QMP gives the errno (ETIMEDOUT, EPROTO...).
Result<nlohmann::json> qmp_execute(const std::string& socket_path, const nlohmann::json& command,
                                   std::chrono::milliseconds timeout = std::chrono::seconds(10));

} // namespace tagmem::cli
