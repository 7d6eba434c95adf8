// SPDX-License-Identifier: Apache-2.0
#include "cxl_poison_format.hpp"

#include <fmt/format.h>
#include <traceevent/event-parse.h>

#include <algorithm>
#include <string>

namespace tagmem {
namespace {

// What a field must be for the decoder to read it.
enum class Kind {
    string, // __string: "__data_loc char[]", 4 bytes (offset and length)
    number, // an unsigned number of `size` bytes, read with tep_read_number_field
    bytes,  // a byte array of `size` bytes (a uuid)
};

Result<tep_format_field*> want(tep_event* event, const char* name, Kind kind, int size,
                               int& min_size) {
    auto bad = [&](std::string why) {
        return make_error(
            EINVAL, fmt::format("the kernel's cxl:{} format: field {} {}", event->name, name, why));
    };
    tep_format_field* f = tep_find_field(event, name);
    if (!f)
        return make_error(
            EINVAL, fmt::format("the kernel's cxl:{} format: no field {}", event->name, name));
    const unsigned long flags = f->flags;
    const bool dynamic = flags & TEP_FIELD_IS_DYNAMIC;
    bool ok = false;
    std::string expected;
    switch (kind) {
    case Kind::string:
        // A relative location (__rel_loc) is not what these events use.
        ok = dynamic && !(flags & TEP_FIELD_IS_RELATIVE) && f->size == 4;
        expected = "a __string (__data_loc char[])";
        break;
    case Kind::number:
        ok = !dynamic &&
             !(flags & (TEP_FIELD_IS_ARRAY | TEP_FIELD_IS_SIGNED | TEP_FIELD_IS_POINTER)) &&
             f->size == size;
        expected = fmt::format("an unsigned {}-byte number", size);
        break;
    case Kind::bytes:
        ok = !dynamic && f->size == size;
        expected = fmt::format("{} bytes", size);
        break;
    }
    if (!ok)
        return bad(
            fmt::format("is '{}' of {} bytes, not {}", f->type ? f->type : "?", f->size, expected));
    if (f->offset < 0 || f->offset > 0xffff)
        return bad("is at an impossible offset");
    min_size = std::max(min_size, f->offset + f->size);
    return f;
}

// Parses `text` into the handle; the event, or why not.
Result<tep_event*> add_event(tep_handle* tep, std::string_view text, const char* name) {
    auto bad = [&](std::string why) {
        return make_error(EINVAL, fmt::format("the kernel's cxl:{} format: {}", name, why));
    };
    if (tep_find_event_by_name(tep, "cxl", name))
        return make_error(EEXIST, fmt::format("cxl:{} added twice", name));
    const std::string buf(text);
    // An event whose print arguments libtraceevent cannot evaluate (a
    // helper it does not know) is still added with its fields, which is
    // all that is used: only a missing event fails.
    const auto err = tep_parse_event(tep, buf.c_str(), buf.size(), "cxl");
    tep_event* event = tep_find_event_by_name(tep, "cxl", name);
    if (!event) {
        char why[128] = "";
        if (err != 0)
            tep_strerror(tep, err, why, sizeof why);
        return bad(err != 0 ? fmt::format("not parsed by libtraceevent ({})", why)
                            : fmt::format("no event named {}", name));
    }
    // common_type says which event a record is.
    if (event->id <= 0 || event->id > 0xffff)
        return bad(fmt::format("ID {} is not an event id", event->id));
    return event;
}

} // namespace

void TraceFormats::TepFree::operator()(tep_handle* t) const {
    tep_free(t);
}

TraceFormats::TraceFormats() : tep_(tep_alloc()) {
    tep_set_loglevel(TEP_LOG_NONE); // reasons are ours to say, not stderr's
}
TraceFormats::~TraceFormats() = default;
TraceFormats::TraceFormats(TraceFormats&&) noexcept = default;
TraceFormats& TraceFormats::operator=(TraceFormats&&) noexcept = default;

Status TraceFormats::add_poison(std::string_view text) {
    if (!tep_)
        return make_error(ENOMEM, "tep_alloc");
    auto event = add_event(tep_.get(), text, "cxl_poison");
    if (!event)
        return event.error();
    PoisonFields p;
    p.event = *event;
    p.id = (*event)->id;
    int& m = p.min_size;
    // The fields as cxl_core declares them (Linux 6.4 on): the u8
    // trace_type, the u64 addresses, the u32 length in bytes.
    for (auto [slot, name, kind, size] :
         {std::tuple{&p.memdev, "memdev", Kind::string, 4},
          std::tuple{&p.region, "region", Kind::string, 4},
          std::tuple{&p.trace_type, "trace_type", Kind::number, 1},
          std::tuple{&p.hpa, "hpa", Kind::number, 8}, std::tuple{&p.dpa, "dpa", Kind::number, 8},
          std::tuple{&p.dpa_length, "dpa_length", Kind::number, 4}}) {
        auto f = want(*event, name, kind, size, m);
        if (!f)
            return f.error();
        *slot = *f;
    }
    if (tep_find_field(*event, "hpa_alias0")) { // Linux 6.15 on: extended linear cache
        auto f = want(*event, "hpa_alias0", Kind::number, 8, m);
        if (!f)
            return f.error();
        p.hpa_alias0 = *f;
    }
    poison_ = p;
    return Ok{};
}

Status TraceFormats::add_dc(std::string_view text) {
    if (!tep_)
        return make_error(ENOMEM, "tep_alloc");
    auto event = add_event(tep_.get(), text, "cxl_dynamic_capacity");
    if (!event)
        return event.error();
    DcFields d;
    d.event = *event;
    d.id = (*event)->id;
    int& m = d.min_size;
    for (auto [slot, name, kind, size] :
         {std::tuple{&d.memdev, "memdev", Kind::string, 4},
          std::tuple{&d.event_type, "event_type", Kind::number, 1},
          std::tuple{&d.dpa_start, "dpa_start", Kind::number, 8},
          std::tuple{&d.length, "length", Kind::number, 8},
          std::tuple{&d.uuid, "uuid", Kind::bytes, 16},
          std::tuple{&d.sh_extent_seq, "sh_extent_seq", Kind::number, 2}}) {
        auto f = want(*event, name, kind, size, m);
        if (!f)
            return f.error();
        *slot = *f;
    }
    dc_ = d;
    return Ok{};
}

} // namespace tagmem
