// SPDX-License-Identifier: Apache-2.0
// Test helper: ring-buffer pages as the kernel writes them
// (kernel/trace/ring_buffer.c), and records of an event laid out as its
// format file says (core/cxl_poison_format.hpp), for the decoder's tests.
#pragma once

#include <traceevent/event-parse.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tagmem::test {

// A record of `event`: its fixed part (every field, zero), common_type set,
// fields set by name, __strings appended after the fixed part.
class RecordBuilder {
  public:
    explicit RecordBuilder(tep_event* event) : event_(event) {
        std::size_t end = 0;
        for (tep_format_field* f = event->format.fields; f; f = f->next)
            end = std::max<std::size_t>(end, f->offset + f->size);
        bytes_.assign(end, 0);
        put(0, 2, static_cast<std::uint64_t>(event->id));
    }
    RecordBuilder& num(const char* name, std::uint64_t v) {
        tep_format_field* f = field(name);
        put(f->offset, f->size, v);
        return *this;
    }
    RecordBuilder& bytes(const char* name, const std::vector<std::uint8_t>& b) {
        tep_format_field* f = field(name);
        std::copy_n(b.begin(), std::min<std::size_t>(b.size(), f->size),
                    bytes_.begin() + f->offset);
        return *this;
    }
    // A __string as __assign_str stores it: its bytes and a NUL, and the
    // location word (offset | length << 16).
    RecordBuilder& str(const char* name, std::string_view s) {
        const std::size_t off = bytes_.size();
        bytes_.insert(bytes_.end(), s.begin(), s.end());
        bytes_.push_back(0);
        return num(name, off | ((s.size() + 1) << 16));
    }
    std::vector<std::uint8_t>& data() { return bytes_; }
    std::vector<std::uint8_t> build() const { return bytes_; }

  private:
    tep_format_field* field(const char* name) {
        tep_format_field* f = tep_find_field(event_, name);
        if (!f)
            throw std::runtime_error(std::string("no field ") + name);
        return f;
    }
    void put(std::size_t off, std::size_t size, std::uint64_t v) {
        std::memcpy(bytes_.data() + off, &v, std::min<std::size_t>(size, 8)); // little endian
    }
    tep_event* event_;
    std::vector<std::uint8_t> bytes_;
};

// One page (sub-buffer): header (u64 timestamp, u64 commit with flags),
// events, and the missed-events count after the data when stored.
class PageBuilder {
  public:
    static constexpr std::uint32_t kMissedEvents = 1u << 31, kMissedStored = 1u << 30;

    // A data event: type_len = length in words when it fits (<= 112
    // bytes), else type_len 0 and the length (+ 4) in the next word.
    PageBuilder& event(const std::vector<std::uint8_t>& payload, std::uint32_t delta = 1) {
        const std::size_t len = (payload.size() + 3) & ~std::size_t{3};
        if (len <= 112 && len > 0) {
            word(static_cast<std::uint32_t>(len / 4) | delta << 5);
        } else {
            word(0 | delta << 5);
            word(static_cast<std::uint32_t>(len + 4));
        }
        data_.insert(data_.end(), payload.begin(), payload.end());
        data_.resize(data_.size() + (len - payload.size()), 0);
        return *this;
    }
    PageBuilder& time_extend(std::uint64_t delta) {
        word(30 | static_cast<std::uint32_t>(delta & ((1u << 27) - 1)) << 5);
        return word(static_cast<std::uint32_t>(delta >> 27));
    }
    // Padding of `total` bytes (header included), as a discarded event.
    PageBuilder& padding(std::uint32_t total) {
        word(29 | 1u << 5);
        word(total - 4);
        data_.resize(data_.size() + (total - 8), 0);
        return *this;
    }
    PageBuilder& word(std::uint32_t w) {
        const auto* p = reinterpret_cast<const std::uint8_t*>(&w);
        data_.insert(data_.end(), p, p + 4);
        return *this;
    }
    PageBuilder& missed(std::optional<std::uint64_t> count) {
        missed_ = true;
        count_ = count;
        return *this;
    }
    // Overrides the commit word (a page that lies about its data).
    PageBuilder& commit(std::uint64_t c) {
        commit_ = c;
        return *this;
    }
    std::vector<std::uint8_t> build(std::size_t page_size = 4096) const {
        std::vector<std::uint8_t> page(16, 0);
        const std::uint64_t ts = 123456789;
        std::memcpy(page.data(), &ts, 8);
        std::uint64_t c = data_.size();
        if (missed_)
            c |= kMissedEvents | (count_ ? kMissedStored : 0);
        if (commit_)
            c = *commit_;
        std::memcpy(page.data() + 8, &c, 8);
        page.insert(page.end(), data_.begin(), data_.end());
        if (missed_ && count_) {
            const auto* p = reinterpret_cast<const std::uint8_t*>(&*count_);
            page.insert(page.end(), p, p + 8);
        }
        if (page.size() < page_size)
            page.resize(page_size, 0);
        return page;
    }

  private:
    std::vector<std::uint8_t> data_;
    bool missed_ = false;
    std::optional<std::uint64_t> count_;
    std::optional<std::uint64_t> commit_;
};

} // namespace tagmem::test
