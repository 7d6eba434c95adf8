// SPDX-License-Identifier: Apache-2.0
// The daemon's side of CXL poison (docs/health.md): a tracefs instance of
// its own, /sys/kernel/tracing/instances/<name> (trace_instance_name: one
// per mount point, "tagmem" for /run/tagmem), with only cxl:cxl_poison (and
// cxl:cxl_dynamic_capacity where the kernel has it) enabled and a small ring
// buffer. Its per-CPU binary buffers, per_cpu/cpuN/trace_pipe_raw, are read
// a page at a time and decoded by field (core/trace_decoder.hpp); the event
// loop polls one descriptor, an epoll set of them all. (The writes to each
// memdev's trigger_poison_list that make the kernel list a device's poison
// as events are core's list_poison.)
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
#include "trace_decoder.hpp"

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
    // (or the ring buffer's header_page) describes what tagmem cannot read
    // (the reason says why; nothing is made); other errors: the setup
    // failed (what was made is removed again).
    static Result<std::unique_ptr<CxlPoisonWatch>> open(HostOs& os, const std::string& name,
                                                        std::string tracing = kTracing);
    ~CxlPoisonWatch() override;
    CxlPoisonWatch(const CxlPoisonWatch&) = delete;
    CxlPoisonWatch& operator=(const CxlPoisonWatch&) = delete;

    // The epoll set of every CPU's buffer (EPOLLIN): readable when one is.
    int fd() const { return ended_ ? -1 : epoll_.get(); }
    const std::string& instance() const { return instance_; }
    bool reused() const { return reused_; }
    // Whether cxl:cxl_dynamic_capacity is read too (kernels with DCD).
    bool dynamic_capacity() const { return formats_->dc() != nullptr; }

    using Batch = PoisonBatch;
    // What the buffers hold now, up to kMaxReadBytes, a page per read(2).
    Batch read() override;

  private:
    struct Cpu {
        std::string path;
        Fd fd;
    };
    CxlPoisonWatch(HostOs& os, std::string instance, std::vector<Cpu> cpus, Fd epoll, bool reused,
                   std::shared_ptr<const TraceFormats> formats, PageLayout layout)
        : os_(os), instance_(std::move(instance)), cpus_(std::move(cpus)), epoll_(std::move(epoll)),
          reused_(reused), formats_(formats), decoder_(std::move(formats), layout) {}

    HostOs& os_;
    std::string instance_;
    std::vector<Cpu> cpus_;
    Fd epoll_;
    bool reused_ = false;
    bool ended_ = false;
    std::shared_ptr<const TraceFormats> formats_;
    TraceDecoder decoder_;
    std::size_t next_cpu_ = 0; // where the next read() starts: no CPU starves the others
};

} // namespace tagmem
