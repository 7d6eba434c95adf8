// SPDX-License-Identifier: Apache-2.0
// Decodes the pages of a tracefs ring buffer (per_cpu/cpuN/trace_pipe_raw)
// into CXL records (docs/health.md, "CXL poison").
//
// A read of trace_pipe_raw gives one sub-buffer ("page"): a header (u64
// timestamp, a long `commit` with the data's length in its low 27 bits and
// the missed-events flags in bits 31 and 30, the count of missed events
// after the data when bit 30 is set), then events, each a 32-bit header
// (type_len:5, time_delta:27) and its data. libtraceevent's kbuffer walks
// the events and tep reads their fields by name (core/cxl_poison_format.hpp);
// trace_pipe's text is not kernel ABI and is not read.
//
// kbuffer trusts the page: a length that points back or past the data
// would make it loop or read beyond. The kernel's pages are sound, but a
// page is checked first (every event inside `commit`, every step forward)
// and a page that is not is malformed as a whole, so that nothing read can
// make the daemon loop or read outside what it read.
#pragma once

#include "cxl_poison.hpp"
#include "cxl_poison_format.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

struct kbuffer;

namespace tagmem {

// The ring buffer's page, from tracefs's events/header_page.
struct PageLayout {
    int long_size = 8;            // the size of `commit` (the kernel's long)
    std::size_t data_offset = 16; // where events start
    std::size_t page_size = 4096; // the whole sub-buffer, header included
};

// Reads header_page's text: the commit field's size and the data field's
// offset and size. EINVAL when it is not a layout kbuffer reads.
Result<PageLayout> parse_header_page(std::string_view text);

class TraceDecoder {
  public:
    // The largest page read (buffer_subbuf_size_kb may raise it to this).
    static constexpr std::size_t kMaxPage = 64 * 1024;

    TraceDecoder(std::shared_ptr<const TraceFormats> formats, PageLayout layout);
    ~TraceDecoder();
    TraceDecoder(const TraceDecoder&) = delete;
    TraceDecoder& operator=(const TraceDecoder&) = delete;

    std::size_t page_size() const { return layout_.page_size; }

    // Decodes what one read() of trace_pipe_raw gave into `out`: records
    // of cxl_poison and cxl_dynamic_capacity, records of other events
    // ignored, missed events counted in `lost`, and what is not sound in
    // `malformed` with the reason (never an address).
    void decode(std::span<const std::uint8_t> page, PoisonBatch& out);

  private:
    void decode_record(const std::uint8_t* data, std::size_t size, PoisonBatch& out);

    std::shared_ptr<const TraceFormats> formats_;
    PageLayout layout_;
    ::kbuffer* kbuf_ = nullptr;
    // The page, copied, with zeroed room after it: kbuffer reads an
    // event's header words before it knows where the data ends.
    std::vector<std::uint8_t> page_;
};

} // namespace tagmem
