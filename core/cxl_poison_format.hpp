// SPDX-License-Identifier: Apache-2.0
// The CXL trace events tagmem reads, as the kernel declares them in
// tracefs's events/cxl/<event>/format (docs/health.md, "CXL poison").
//
// Records are read in the ring buffer's binary form (core/trace_decoder.hpp)
// and decoded by field name: the format file says where each field is and
// its type and size, and it is kernel ABI; trace_pipe's text (the event's
// TP_printk) is not. libtraceevent parses the files (as ndctl's
// util/event_trace.c does). Every field the decoder reads must be there with
// a type it can read (a number of the expected size, unsigned; a __string;
// a byte array), wherever the kernel puts it; the print format is ignored.
// An event that is not so is refused with the reason before a record is read.
#pragma once

#include "result.hpp"

#include <memory>
#include <optional>
#include <string_view>

struct tep_handle;
struct tep_event;
struct tep_format_field;

namespace tagmem {

// cxl:cxl_poison (Linux 6.4 on). Every pointer is into TraceFormats' handle.
struct PoisonFields {
    tep_event* event = nullptr;
    int id = 0; // common_type of its records
    tep_format_field *memdev = nullptr, *region = nullptr, *trace_type = nullptr, *hpa = nullptr,
                     *dpa = nullptr, *dpa_length = nullptr;
    tep_format_field* hpa_alias0 = nullptr; // Linux 6.15 on; null before
    int min_size = 0;                       // a record's fixed part: the end of the last field read
};

// cxl:cxl_dynamic_capacity (kernels with the DCD series only).
struct DcFields {
    tep_event* event = nullptr;
    int id = 0;
    tep_format_field *memdev = nullptr, *event_type = nullptr, *dpa_start = nullptr,
                     *length = nullptr, *uuid = nullptr, *sh_extent_seq = nullptr;
    int min_size = 0;
};

// The events' formats, in one libtraceevent handle. Not copyable; movable.
class TraceFormats {
  public:
    TraceFormats();
    ~TraceFormats();
    TraceFormats(TraceFormats&&) noexcept;
    TraceFormats& operator=(TraceFormats&&) noexcept;

    // Adds an event from its format file's text and checks it. EINVAL with
    // the reason when it is not what the decoder reads (the event is then
    // not decoded); EEXIST when it was added already.
    Status add_poison(std::string_view format_text);
    Status add_dc(std::string_view format_text);

    const PoisonFields* poison() const { return poison_ ? &*poison_ : nullptr; }
    const DcFields* dc() const { return dc_ ? &*dc_ : nullptr; }
    tep_handle* tep() const { return tep_.get(); }

  private:
    struct TepFree {
        void operator()(tep_handle* t) const;
    };
    std::unique_ptr<tep_handle, TepFree> tep_;
    std::optional<PoisonFields> poison_;
    std::optional<DcFields> dc_;
};

} // namespace tagmem
