// SPDX-License-Identifier: Apache-2.0
#include "cxl_poison_watch.hpp"

#include "host_os.hpp"
#include "log.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>

namespace tagmem {

Result<std::unique_ptr<CxlPoisonWatch>> CxlPoisonWatch::open(HostOs& os, const std::string& name,
                                                             std::string tracing) {
    if (!os.exists(tracing + "/instances"))
        return make_error(ENOENT, fmt::format("no tracefs at {}", tracing));
    if (!os.exists(tracing + "/events/cxl/cxl_poison"))
        return make_error(ENOENT, fmt::format("the kernel has no cxl:cxl_poison trace event "
                                              "({}/events/cxl/cxl_poison: cxl_core not loaded, "
                                              "or Linux before 6.4)",
                                              tracing));
    // The event's fields, from its format file (kernel ABI), before anything
    // is made: an event that is not what the line parser reads is refused.
    std::optional<PoisonFormat> format;
    if (auto text = os.read_file(tracing + "/events/cxl/cxl_poison/format")) {
        auto parsed = parse_poison_format(*text);
        if (!parsed)
            return make_error(EPROTO, parsed.error().message);
        format = std::move(*parsed);
    } else if (!is_gone(text.error().code)) {
        return text.error();
    }
    const std::string inst = fmt::format("{}/instances/{}", tracing, name);
    bool reused = false;
    if (auto made = os.make_dir(inst); !made) {
        if (made.error().code != EEXIST)
            return made.error();
        reused = true; // a crashed run's: set it up anew
    }
    auto fail = [&](const Error& e) -> Error {
        // Ours (made now, or a crashed run's): not left behind half set up.
        (void)os.remove_dir(inst);
        return e;
    };
    // Whatever a previous run enabled goes off; then only cxl_poison.
    if (auto s = os.write_file(inst + "/events/enable", "0\n"); !s)
        return fail(s.error());
    if (auto s = os.write_file(inst + "/buffer_size_kb", std::string(kBufferKiB) + "\n"); !s)
        return fail(s.error());
    if (auto s = os.write_file(inst + "/events/cxl/cxl_poison/enable", "1\n"); !s)
        return fail(s.error());
    auto pipe = os.open_nonblocking(inst + "/trace_pipe");
    if (!pipe)
        return fail(pipe.error());
    return std::unique_ptr<CxlPoisonWatch>(
        new CxlPoisonWatch(os, inst, std::move(*pipe), reused, std::move(format)));
}

CxlPoisonWatch::~CxlPoisonWatch() {
    // tracefs refuses to remove an instance whose trace_pipe is open.
    pipe_.reset();
    (void)os_.write_file(instance_ + "/events/cxl/cxl_poison/enable", "0\n");
    if (auto s = os_.remove_dir(instance_); !s)
        log::warning("CXL poison: {}", s.error().message);
    else
        log::info("CXL poison: removed {}", instance_);
}

CxlPoisonWatch::Batch CxlPoisonWatch::read() {
    Batch b;
    if (ended_) {
        b.ended = true; // still: a listing must not take this for an empty list
        return b;
    }
    std::vector<std::optional<std::string>> lines;
    char buf[8192];
    std::size_t total = 0;
    while (total < kMaxReadBytes) {
        ssize_t n = ::read(pipe_.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            if (errno != EAGAIN)
                b.error = sys_error("read " + instance_ + "/trace_pipe");
            break;
        }
        if (n == 0) {
            // tracefs's trace_pipe never ends; anything else that does (a
            // FIFO whose writer left) is read no more.
            ended_ = b.ended = true;
            break;
        }
        total += static_cast<std::size_t>(n);
        lines_.feed(std::string_view(buf, static_cast<std::size_t>(n)), lines);
    }
    for (auto& line : lines) {
        if (!line) {
            b.malformed.push_back(
                fmt::format("a line longer than {} bytes", TraceLineSplitter::kMaxLine));
            continue;
        }
        auto r = parse_cxl_poison_line(*line, format_ ? std::optional<bool>(format_->hpa_alias0)
                                                      : std::nullopt);
        if (r)
            b.records.push_back(std::move(*r));
        else if (r.error().code == EOVERFLOW)
            ++b.lost;
        else
            b.malformed.push_back(r.error().message);
    }
    return b;
}

} // namespace tagmem
