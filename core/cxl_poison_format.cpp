// SPDX-License-Identifier: Apache-2.0
#include "cxl_poison_format.hpp"

#include <fmt/format.h>
#include <traceevent/event-parse.h>

#include <memory>

namespace tagmem {
namespace {

struct TepFree {
    void operator()(tep_handle* t) const { tep_free(t); }
};

// A field as the parser needs it: a string the kernel stores out of line
// (__string: "__data_loc char[]"), or a number of `size` bytes.
struct Want {
    const char* name;
    int size; // 0: a __string
};

// What parse_cxl_poison_line reads, by field (Linux 6.4 on; the u8
// trace_type printed symbolically, the uuid as %pU).
constexpr Want kFields[] = {
    {"memdev", 0}, {"host", 0},  {"serial", 8},      {"trace_type", 1},
    {"region", 0}, {"hpa", 8},   {"dpa", 8},         {"dpa_length", 4},
    {"source", 1}, {"flags", 1}, {"overflow_ts", 8}, {"uuid", 16},
};

// The print format's keys, in the order the line parser takes them.
std::vector<std::string> keys_of(std::string_view fmt) {
    std::vector<std::string> keys;
    for (std::size_t at = 0; at < fmt.size();) {
        auto eq = fmt.find('=', at);
        if (eq == std::string_view::npos)
            break;
        auto start = fmt.rfind(' ', eq);
        start = start == std::string_view::npos || start < at ? at : start + 1;
        keys.emplace_back(fmt.substr(start, eq - start));
        auto blank = fmt.find(' ', eq);
        at = blank == std::string_view::npos ? fmt.size() : blank + 1;
    }
    return keys;
}

} // namespace

Result<PoisonFormat> parse_poison_format(std::string_view text) {
    auto bad = [](std::string why) {
        return make_error(EINVAL, "the kernel's cxl:cxl_poison format: " + std::move(why));
    };
    tep_set_loglevel(TEP_LOG_NONE); // reasons are ours to say, not stderr's
    std::unique_ptr<tep_handle, TepFree> tep(tep_alloc());
    if (!tep)
        return make_error(ENOMEM, "tep_alloc");
    // The format file's text, as the kernel writes it; libtraceevent wants
    // a mutable-free buffer of its own size.
    const std::string buf(text);
    // An event whose print arguments libtraceevent cannot evaluate (a
    // helper it does not know) is still added with its fields and print
    // format, which is all that is used here: only a missing event fails.
    const auto err = tep_parse_event(tep.get(), buf.c_str(), buf.size(), "cxl");
    tep_event* event = tep_find_event_by_name(tep.get(), "cxl", "cxl_poison");
    if (!event) {
        char why[128] = "";
        if (err != 0)
            tep_strerror(tep.get(), err, why, sizeof why);
        return bad(err != 0 ? fmt::format("not parsed by libtraceevent ({})", why)
                            : std::string("no event named cxl_poison"));
    }
    PoisonFormat out;
    out.id = event->id;
    for (const auto& w : kFields) {
        tep_format_field* f = tep_find_field(event, w.name);
        if (!f)
            return bad(fmt::format("no field {}", w.name));
        const bool dynamic = (f->flags & TEP_FIELD_IS_DYNAMIC) != 0;
        if (w.size == 0 ? !dynamic : (dynamic || f->size != w.size))
            return bad(fmt::format("field {} is '{}' of {} bytes, not {}", w.name, f->type, f->size,
                                   w.size == 0 ? "a string" : fmt::to_string(w.size)));
    }
    if (tep_format_field* alias = tep_find_field(event, "hpa_alias0")) {
        if ((alias->flags & TEP_FIELD_IS_DYNAMIC) || alias->size != 8)
            return bad("field hpa_alias0 is not a u64");
        out.hpa_alias0 = true;
    }
    if (!event->print_fmt.format)
        return bad("no print fmt");
    out.keys = keys_of(event->print_fmt.format);
    std::vector<std::string> expected = {"memdev", "host",        "serial", "trace_type",
                                         "region", "region_uuid", "hpa"};
    if (out.hpa_alias0)
        expected.emplace_back("hpa_alias0");
    for (const char* k : {"dpa", "dpa_length", "source", "flags", "overflow_time"})
        expected.emplace_back(k);
    if (out.keys != expected) {
        std::string got;
        for (const auto& k : out.keys)
            got += (got.empty() ? "" : " ") + k;
        return bad(
            fmt::format("print fmt keys '{}' are not those tagmem reads", got.substr(0, 200)));
    }
    return out;
}

} // namespace tagmem
