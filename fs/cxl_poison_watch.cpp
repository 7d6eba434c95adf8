// SPDX-License-Identifier: Apache-2.0
#include "cxl_poison_watch.hpp"

#include "host_os.hpp"
#include "log.hpp"

#include <fmt/format.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>

namespace tagmem {
namespace {

constexpr const char* kPoison = "events/cxl/cxl_poison";
constexpr const char* kDc = "events/cxl/cxl_dynamic_capacity";

// per_cpu's cpuN, by N.
std::optional<unsigned> cpu_number(const std::string& name) {
    if (!name.starts_with("cpu") || name.size() < 4 || name.size() > 8)
        return std::nullopt;
    unsigned n = 0;
    auto [end, ec] = std::from_chars(name.data() + 3, name.data() + name.size(), n);
    if (ec != std::errc() || end != name.data() + name.size())
        return std::nullopt;
    return n;
}

} // namespace

Result<std::unique_ptr<CxlPoisonWatch>> CxlPoisonWatch::open(HostOs& os, const std::string& name,
                                                             std::string tracing) {
    if (!os.exists(tracing + "/instances"))
        return make_error(ENOENT, fmt::format("no tracefs at {}", tracing));
    if (!os.exists(fmt::format("{}/{}", tracing, kPoison)))
        return make_error(ENOENT, fmt::format("the kernel has no cxl:cxl_poison trace event "
                                              "({}/{}: cxl_core not loaded, or Linux before 6.4)",
                                              tracing, kPoison));
    // The events' fields, from their format files (kernel ABI), before
    // anything is made: an event the decoder cannot read is refused. tracefs
    // has a format file for every event it has.
    auto formats = std::make_shared<TraceFormats>();
    auto text = os.read_file(fmt::format("{}/{}/format", tracing, kPoison));
    if (!text)
        return make_error(is_gone(text.error().code) ? EPROTO : text.error().code,
                          text.error().message);
    if (auto s = formats->add_poison(*text); !s)
        return make_error(EPROTO, s.error().message);
    // Dynamic Capacity events where the kernel has them (the DCD series);
    // one tagmem cannot read costs them, not the poison.
    const std::string dc_dir = fmt::format("{}/{}", tracing, kDc);
    if (os.exists(dc_dir)) {
        auto dc = os.read_file(dc_dir + "/format");
        auto s = dc ? formats->add_dc(*dc) : Status(dc.error());
        if (!s)
            log::warning("CXL poison: not reading cxl:cxl_dynamic_capacity: {}", s.error().message);
    }
    PageLayout layout;
    layout.page_size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    if (auto hp = os.read_file(tracing + "/events/header_page")) {
        auto parsed = parse_header_page(*hp);
        if (!parsed)
            return make_error(EPROTO, parsed.error().message);
        layout = *parsed;
    } else if (!is_gone(hp.error().code)) {
        return hp.error();
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
    // Whatever a previous run enabled goes off; then only our events.
    if (auto s = os.write_file(inst + "/events/enable", "0\n"); !s)
        return fail(s.error());
    if (auto s = os.write_file(inst + "/buffer_size_kb", std::string(kBufferKiB) + "\n"); !s)
        return fail(s.error());
    // poll(2) on trace_pipe_raw wakes when the buffer is buffer_percent
    // full (50 by default): 0 wakes at the first record. (Before Linux
    // 5.0 the file is absent and any record wakes.)
    if (os.exists(inst + "/buffer_percent"))
        if (auto s = os.write_file(inst + "/buffer_percent", "0\n"); !s)
            return fail(s.error());
    if (auto s = os.write_file(fmt::format("{}/{}/enable", inst, kPoison), "1\n"); !s)
        return fail(s.error());
    if (formats->dc())
        if (auto s = os.write_file(fmt::format("{}/{}/enable", inst, kDc), "1\n"); !s)
            return fail(s.error());

    auto names = os.list_dir(inst + "/per_cpu");
    if (!names)
        return fail(names.error());
    std::vector<std::pair<unsigned, std::string>> numbered;
    for (const auto& n : *names)
        if (auto cpu = cpu_number(n))
            numbered.emplace_back(*cpu, n);
    std::sort(numbered.begin(), numbered.end());
    if (numbered.empty())
        return fail(make_error(ENOENT, fmt::format("no CPU buffers in {}/per_cpu", inst)));
    Fd epoll(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll)
        return fail(sys_error("epoll_create1"));
    std::vector<Cpu> cpus;
    for (const auto& [n, dir] : numbered) {
        Cpu c{fmt::format("{}/per_cpu/{}/trace_pipe_raw", inst, dir), Fd()};
        auto fd = os.open_nonblocking(c.path);
        if (!fd)
            return fail(fd.error());
        c.fd = std::move(*fd);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = cpus.size();
        if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, c.fd.get(), &ev) != 0)
            return fail(sys_error("epoll_ctl " + c.path));
        cpus.push_back(std::move(c));
    }
    return std::unique_ptr<CxlPoisonWatch>(new CxlPoisonWatch(
        os, inst, std::move(cpus), std::move(epoll), reused, std::move(formats), layout));
}

CxlPoisonWatch::~CxlPoisonWatch() {
    // tracefs refuses to remove an instance whose buffers are open.
    epoll_.reset();
    cpus_.clear();
    (void)os_.write_file(fmt::format("{}/{}/enable", instance_, kPoison), "0\n");
    if (formats_->dc())
        (void)os_.write_file(fmt::format("{}/{}/enable", instance_, kDc), "0\n");
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
    // One page per read(2): trace_pipe_raw gives a whole sub-buffer to a
    // read of its size. CPUs in turn, from where the last call stopped.
    std::vector<std::uint8_t> page(decoder_.page_size());
    std::vector<bool> dry(cpus_.size(), false);
    std::size_t total = 0, left = cpus_.size();
    for (std::size_t i = next_cpu_; left > 0 && total < kMaxReadBytes; ++i) {
        const std::size_t at = i % cpus_.size();
        if (dry[at])
            continue;
        const Cpu& cpu = cpus_[at];
        ssize_t n = ::read(cpu.fd.get(), page.data(), page.size());
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            if (errno != EAGAIN) {
                b.error = sys_error("read " + cpu.path);
                return b;
            }
            dry[at] = true;
            --left;
            continue;
        }
        if (n == 0) {
            // tracefs's trace_pipe_raw does not end; anything else that
            // does (a FIFO whose writer left) is read no more.
            ended_ = b.ended = true;
            return b;
        }
        total += static_cast<std::size_t>(n);
        decoder_.decode(std::span(page.data(), static_cast<std::size_t>(n)), b);
        next_cpu_ = (at + 1) % cpus_.size();
    }
    return b;
}

} // namespace tagmem
