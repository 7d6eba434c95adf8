// SPDX-License-Identifier: Apache-2.0
#include "trace_decoder.hpp"

#include <fmt/format.h>
#include <traceevent/event-parse.h>
// kbuffer.h, unlike event-parse.h, declares its functions without extern "C".
extern "C" {
#include <traceevent/kbuffer.h>
}

#include <algorithm>
#include <charconv>
#include <cstring>
#include <limits>
#include <optional>

namespace tagmem {
namespace {

constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
// The ring buffer's commit word (kernel/trace/ring_buffer.c).
constexpr std::uint64_t kCommitMask = (1u << 27) - 1;
constexpr std::uint64_t kMissedEvents = 1u << 31;
constexpr std::uint64_t kMissedStored = 1u << 30;
// An event header's type_len (include/linux/ring_buffer.h).
constexpr unsigned kPadding = 29, kTimeExtend = 30, kTimeStamp = 31;

std::uint32_t u32_at(const std::uint8_t* p) {
    std::uint32_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

std::uint64_t long_at(const std::uint8_t* p, int long_size) {
    if (long_size == 4)
        return u32_at(p);
    std::uint64_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

// "memN", "regionN": the prefix and a decimal without a leading zero.
bool named(std::string_view s, std::string_view prefix) {
    if (!s.starts_with(prefix))
        return false;
    s.remove_prefix(prefix.size());
    if (s.empty() || s.find_first_not_of("0123456789") != std::string_view::npos ||
        (s.size() > 1 && s[0] == '0'))
        return false;
    return s.size() <= 10;
}

// One field line of header_page: "\tfield: <type> <name>;\toffset:N;\tsize:N;..."
std::optional<std::pair<std::size_t, std::size_t>> field_of(std::string_view text,
                                                            std::string_view name) {
    const std::string key = fmt::format(" {};", name);
    for (std::size_t at = 0; at < text.size();) {
        auto nl = text.find('\n', at);
        std::string_view line = text.substr(at, nl == std::string_view::npos ? nl : nl - at);
        at = nl == std::string_view::npos ? text.size() : nl + 1;
        if (line.find("field:") == std::string_view::npos ||
            line.find(key) == std::string_view::npos)
            continue;
        auto number = [&](std::string_view k) -> std::optional<std::size_t> {
            auto p = line.find(k);
            if (p == std::string_view::npos)
                return std::nullopt;
            std::size_t v = 0;
            const char* b = line.data() + p + k.size();
            auto [end, ec] = std::from_chars(b, line.data() + line.size(), v);
            if (ec != std::errc() || end == b || end == line.data() + line.size() || *end != ';')
                return std::nullopt;
            return v;
        };
        auto off = number("offset:"), size = number("size:");
        if (!off || !size)
            return std::nullopt;
        return std::pair{*off, *size};
    }
    return std::nullopt;
}

} // namespace

Result<PageLayout> parse_header_page(std::string_view text) {
    auto commit = field_of(text, "commit");
    auto data = field_of(text, "data");
    if (!commit || !data)
        return make_error(EINVAL, "the kernel's events/header_page: no commit or data field");
    PageLayout l;
    l.long_size = static_cast<int>(commit->second);
    l.data_offset = data->first;
    l.page_size = data->first + data->second;
    // kbuffer's layout: the u64 timestamp, the commit long, then the data.
    if (commit->first != 8 || (l.long_size != 4 && l.long_size != 8) ||
        l.data_offset != 8 + commit->second || data->second < 64 ||
        l.page_size > TraceDecoder::kMaxPage)
        return make_error(EINVAL,
                          fmt::format("the kernel's events/header_page: commit of {} bytes "
                                      "at {}, data of {} bytes at {}: not a layout "
                                      "tagmem reads",
                                      commit->second, commit->first, data->second, data->first));
    return l;
}

TraceDecoder::TraceDecoder(std::shared_ptr<const TraceFormats> formats, PageLayout layout)
    : formats_(std::move(formats)), layout_(layout), page_(layout.page_size + 16) {
    // The daemon reads the kernel it runs on: its byte order.
    kbuf_ = kbuffer_alloc(layout.long_size == 4 ? KBUFFER_LSIZE_4 : KBUFFER_LSIZE_8,
                          KBUFFER_ENDIAN_SAME_AS_HOST);
}

TraceDecoder::~TraceDecoder() {
    kbuffer_free(kbuf_);
}

void TraceDecoder::decode(std::span<const std::uint8_t> in, PoisonBatch& out) {
    auto bad = [&](std::string why) { out.malformed.push_back("ring buffer page: " + why); };
    if (!kbuf_) {
        out.error = make_error(ENOMEM, "kbuffer_alloc");
        return;
    }
    const std::size_t start = layout_.data_offset;
    if (in.size() < start || in.size() > layout_.page_size)
        return bad(fmt::format("{} bytes, not a page of {}", in.size(), layout_.page_size));
    std::fill(std::copy(in.begin(), in.end(), page_.begin()), page_.end(), 0);
    const std::uint64_t commit = long_at(page_.data() + 8, layout_.long_size);
    const std::size_t size = commit & kCommitMask;
    const std::size_t avail = in.size() - start;
    if (size > avail || size % 4 != 0)
        return bad(fmt::format("data of {} bytes in {} read", size, avail));
    if (commit & kMissedEvents) {
        // kbuffer_missed_events says this only while the first record is
        // current, which a page beginning with a time stamp never has; the
        // header says it always.
        std::uint64_t n = 1; // not stored: some, how many unknown
        if (commit & kMissedStored) {
            if (size + layout_.long_size > avail)
                return bad("the count of missed events past what was read");
            n = std::max<std::uint64_t>(1, long_at(page_.data() + start + size, layout_.long_size));
        }
        out.lost += static_cast<std::size_t>(std::min<std::uint64_t>(n, 1u << 30));
    }
    // Every event inside the data, every step forward: what kbuffer then
    // walks the same way (the same arithmetic) is safe to walk.
    const std::uint8_t* data = page_.data() + start;
    for (std::size_t pos = 0; pos < size;) {
        const std::uint32_t header = u32_at(data + pos);
        const unsigned type_len = header & 31;
        std::uint64_t next = 0;
        if (type_len == kPadding) {
            // kbuffer reads the length word even when the header ends the
            // data (page_ has room after it): a "negative" one would send it
            // back into the page, so it is checked either way.
            const std::uint32_t len = u32_at(data + pos + 4);
            if (len >= 0x8000'0000u || len % 4 != 0)
                return bad("a padding event of an impossible length");
            if (pos + 8 > size)
                break; // a padding header alone: the rest of the page
            next = pos + 4 + std::uint64_t{len};
            if (next >= size)
                break;
        } else if (type_len == kTimeExtend || type_len == kTimeStamp) {
            next = pos + 8;
        } else if (type_len == 0) { // a long record: its length in the next word
            if (pos + 8 > size)
                return bad("an event header past the data");
            const std::uint32_t len = u32_at(data + pos + 4);
            if (len < 4 || len >= 0x7fff'0000u)
                return bad("an event of an impossible length");
            next = pos + 8 + ((std::uint64_t{len} - 4 + 3) & ~std::uint64_t{3});
        } else {
            next = pos + 4 + 4 * std::uint64_t{type_len};
        }
        if (next > size)
            return bad("an event past the data");
        pos = static_cast<std::size_t>(next);
    }
    if (kbuffer_load_subbuffer(kbuf_, page_.data()) != 0)
        return bad("not loaded by kbuffer");
    for (void* p = kbuffer_read_event(kbuf_, nullptr); p; p = kbuffer_next_event(kbuf_, nullptr)) {
        const int n = kbuffer_event_size(kbuf_);
        const auto* rec = static_cast<const std::uint8_t*>(p);
        if (n < 0 || rec < data || rec + n > data + size)
            return bad("an event outside the data"); // not after the walk above
        decode_record(rec, static_cast<std::size_t>(n), out);
    }
}

void TraceDecoder::decode_record(const std::uint8_t* data, std::size_t size, PoisonBatch& out) {
    if (size < 2) {
        out.malformed.push_back(fmt::format("a record of {} bytes: no event id", size));
        return;
    }
    std::uint16_t id;
    std::memcpy(&id, data, sizeof id);
    const PoisonFields* pf = formats_->poison();
    const DcFields* df = formats_->dc();
    tep_event* event = pf && id == pf->id ? pf->event : df && id == df->id ? df->event : nullptr;
    if (!event)
        return; // another event's record: not ours to read
    const std::string what = fmt::format("{} record", event->name);
    std::string why;
    auto fail = [&](std::string w) {
        if (why.empty())
            why = std::move(w);
    };
    const int min_size = event == (pf ? pf->event : nullptr) ? pf->min_size : df->min_size;
    if (size < static_cast<std::size_t>(min_size)) {
        out.malformed.push_back(
            fmt::format("{}: {} bytes, shorter than its fields ({})", what, size, min_size));
        return;
    }
    tep_record record{};
    record.data = const_cast<std::uint8_t*>(data);
    record.size = static_cast<int>(size);
    auto number = [&](tep_format_field* f) -> std::uint64_t {
        unsigned long long v = 0;
        if (tep_read_number_field(f, data, &v) != 0)
            fail(fmt::format("field {} not read", f->name));
        return v;
    };
    // A __string: its location word (offset, length) must point inside
    // the record at one NUL-terminated string, and tep must agree.
    auto string = [&](tep_format_field* f) -> std::string {
        const std::uint64_t loc = number(f);
        const std::size_t off = loc & 0xffff, len = (loc >> 16) & 0xffff;
        if (len == 0 || off + len > size) {
            fail(fmt::format("field {}: a string outside the record", f->name));
            return {};
        }
        const auto* s = reinterpret_cast<const char*>(data + off);
        if (s[len - 1] != '\0' || std::memchr(s, 0, len - 1)) {
            fail(fmt::format("field {}: not one NUL-terminated string", f->name));
            return {};
        }
        int raw_len = 0;
        void* raw = tep_get_field_raw(nullptr, event, f->name, &record, &raw_len, 0);
        if (raw != s) {
            fail(fmt::format("field {}: not where libtraceevent finds it", f->name));
            return {};
        }
        return std::string(s, len - 1);
    };

    if (pf && event == pf->event) {
        PoisonRecord r;
        r.memdev = string(pf->memdev);
        if (why.empty() && !named(r.memdev, "mem"))
            fail("memdev is not memN");
        r.region = string(pf->region);
        if (why.empty() && !r.region.empty() && !named(r.region, "region"))
            fail("region is neither empty nor regionN");
        switch (number(pf->trace_type)) {
        case 0: r.type = PoisonTraceType::list; break;
        case 1: r.type = PoisonTraceType::inject; break;
        case 2: r.type = PoisonTraceType::clear; break;
        default: fail(fmt::format("unknown trace_type {}", number(pf->trace_type)));
        }
        r.dpa = number(pf->dpa);
        r.length = number(pf->dpa_length);
        std::uint64_t hpa[2] = {number(pf->hpa), pf->hpa_alias0 ? number(pf->hpa_alias0) : kMax};
        if (r.length == 0)
            fail("dpa_length 0: an empty range");
        else if (r.dpa > kMax - (r.length - 1))
            fail("dpa + dpa_length passes 2^64");
        // ULLONG_MAX: no region maps the DPA (or the kernel could not
        // translate it). An address but no region is not what the kernel emits.
        for (auto a : hpa) {
            if (a == kMax || !why.empty())
                continue;
            if (r.region.empty())
                fail("an hpa without a region");
            else if (a > kMax - (r.length - 1))
                fail("hpa + dpa_length passes 2^64");
            else
                r.hpa.push_back({a, r.length});
        }
        if (!why.empty())
            out.malformed.push_back(fmt::format("{}: {}", what, why));
        else
            out.records.push_back(std::move(r));
        return;
    }

    DcCapacityEvent e;
    e.memdev = string(df->memdev);
    if (why.empty() && !named(e.memdev, "mem"))
        fail("memdev is not memN");
    using T = DcCapacityEvent::DcEventType;
    const std::uint64_t type = number(df->event_type);
    if (type > 3)
        fail(fmt::format("unknown event_type {}", type));
    e.type = static_cast<T>(type);
    e.dpa_start = number(df->dpa_start);
    e.length = number(df->length);
    if (e.type != T::region_updated && e.length == 0)
        fail("length 0: an empty extent");
    else if (e.length != 0 && e.dpa_start > kMax - (e.length - 1))
        fail("dpa_start + length passes 2^64");
    std::array<std::uint8_t, 16> tag{};
    std::memcpy(tag.data(), data + df->uuid->offset, tag.size());
    e.tag = Uuid(tag);
    e.shared_seq = static_cast<std::uint16_t>(number(df->sh_extent_seq));
    if (!why.empty())
        out.malformed.push_back(fmt::format("{}: {}", what, why));
    else
        out.dc_events.push_back(std::move(e));
}

} // namespace tagmem
