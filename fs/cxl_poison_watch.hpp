// SPDX-License-Identifier: Apache-2.0
// The daemon's side of CXL poison (docs/health.md): a tracefs instance of
// its own, /sys/kernel/tracing/instances/tagmem, with only the
// cxl:cxl_poison event enabled and a small ring buffer, whose trace_pipe the
// event loop polls (POLLIN). (The writes to each memdev's
// trigger_poison_list that make the kernel list a device's poison as events
// are core's trigger_poison_lists.)
//
// An instance of its own leaves the system's tracing and other instances
// (rasdaemon's, `cxl list --media-errors`'s) alone. One left by a crashed
// run is reused; a clean exit removes it (the destructor). Every access goes
// through HostOs.
#pragma once

#include "cxl_poison.hpp"
#include "fd.hpp"
#include "result.hpp"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tagmem {

class HostOs;

class CxlPoisonWatch {
  public:
    static constexpr const char* kTracing = "/sys/kernel/tracing";
    static constexpr const char* kInstance = "tagmem";
    // Per CPU, in KiB: records arrive in bursts of a poison list at most.
    static constexpr const char* kBufferKiB = "64";
    // Read per call of read(): the rest waits for the next turn of the loop.
    static constexpr std::size_t kMaxReadBytes = 64 * 1024;

    // Sets the instance up. ENOENT: no tracefs, or no cxl_poison event (no
    // cxl_core, or a kernel before 6.4); other errors: the setup failed
    // (what was made is removed again).
    static Result<std::unique_ptr<CxlPoisonWatch>> open(HostOs& os, std::string tracing = kTracing);
    ~CxlPoisonWatch();
    CxlPoisonWatch(const CxlPoisonWatch&) = delete;
    CxlPoisonWatch& operator=(const CxlPoisonWatch&) = delete;

    int fd() const { return ended_ ? -1 : pipe_.get(); }
    const std::string& instance() const { return instance_; }
    bool reused() const { return reused_; }

    struct Batch {
        std::vector<PoisonRecord> records;
        std::vector<std::string> malformed; // why, per line (never the hpa)
        std::size_t lost = 0;               // "[LOST n EVENTS]" lines
        bool ended = false;                 // end of file: no more events
        std::optional<Error> error;         // a failed read
    };
    // What trace_pipe holds now, up to kMaxReadBytes.
    Batch read();

  private:
    CxlPoisonWatch(HostOs& os, std::string instance, Fd pipe, bool reused)
        : os_(os), instance_(std::move(instance)), pipe_(std::move(pipe)), reused_(reused) {}

    HostOs& os_;
    std::string instance_;
    Fd pipe_;
    bool reused_ = false;
    bool ended_ = false;
    TraceLineSplitter lines_;
};

} // namespace tagmem
