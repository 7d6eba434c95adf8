// SPDX-License-Identifier: Apache-2.0
// The daemon's side of CXL poison (docs/health.md): a tracefs instance of
// its own, /sys/kernel/tracing/instances/<name> (trace_instance_name: one
// per mount point, "tagmem" for /run/tagmem), with only the
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
#include "cxl_poison_format.hpp"
#include "fd.hpp"
#include "result.hpp"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tagmem {

class HostOs;

class CxlPoisonWatch : public PoisonSource {
  public:
    static constexpr const char* kTracing = "/sys/kernel/tracing";
    // Per CPU, in KiB: records arrive in bursts of a poison list at most.
    static constexpr const char* kBufferKiB = "64";
    // Read per call of read(): the rest waits for the next turn of the loop.
    static constexpr std::size_t kMaxReadBytes = 64 * 1024;

    // Sets the instance up. ENOENT: no tracefs, or no cxl_poison event (no
    // cxl_core, or a kernel before 6.4); EPROTO: the event's format file
    // describes an event tagmem cannot read (the reason says why; nothing
    // is made); other errors: the setup failed (what was made is removed
    // again).
    static Result<std::unique_ptr<CxlPoisonWatch>> open(HostOs& os, const std::string& name,
                                                        std::string tracing = kTracing);
    ~CxlPoisonWatch() override;
    CxlPoisonWatch(const CxlPoisonWatch&) = delete;
    CxlPoisonWatch& operator=(const CxlPoisonWatch&) = delete;

    int fd() const { return ended_ ? -1 : pipe_.get(); }
    const std::string& instance() const { return instance_; }
    bool reused() const { return reused_; }
    // The event's format as the kernel declared it; nullopt: tracefs had no
    // format file, and lines of either form (with or without hpa_alias0) are read.
    const std::optional<PoisonFormat>& format() const { return format_; }

    using Batch = PoisonBatch;
    // What trace_pipe holds now, up to kMaxReadBytes.
    Batch read() override;

  private:
    CxlPoisonWatch(HostOs& os, std::string instance, Fd pipe, bool reused,
                   std::optional<PoisonFormat> format)
        : os_(os), instance_(std::move(instance)), pipe_(std::move(pipe)), reused_(reused),
          format_(std::move(format)) {}

    HostOs& os_;
    std::string instance_;
    Fd pipe_;
    bool reused_ = false;
    bool ended_ = false;
    std::optional<PoisonFormat> format_;
    TraceLineSplitter lines_;
};

} // namespace tagmem
