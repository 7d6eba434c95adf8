// SPDX-License-Identifier: Apache-2.0
// TraceDecoder::decode: a page of a tracefs ring buffer (trace_pipe_raw),
// decoded by kbuffer and libtraceevent with the real kernels' formats
// (tests/data). The kernel writes these pages; a page that is not sound
// must still never make the decoder loop, read outside it, or take a
// record whose ranges are not what the tracker may use.
#include "cxl_poison_format.hpp"
#include "fuzz_check.hpp"
#include "trace_decoder.hpp"

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>
#include <string>

namespace {

std::string data_file(const char* name) {
    std::ifstream in(std::string(TAGMEM_FUZZ_DATA) + "/" + name);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::shared_ptr<tagmem::TraceFormats> formats() {
    auto f = std::make_shared<tagmem::TraceFormats>();
    FUZZ_CHECK(f->add_poison(data_file("cxl_poison_format_7.2_dcd")));
    FUZZ_CHECK(f->add_dc(data_file("cxl_dynamic_capacity_format_7.2_dcd")));
    return f;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
    static tagmem::TraceDecoder decoder(formats(), tagmem::PageLayout{});
    if (size > decoder.page_size())
        return 0; // a read(2) of a page never returns more
    tagmem::PoisonBatch b;
    decoder.decode(std::span(data, size), b);
    for (const auto& why : b.malformed)
        FUZZ_CHECK(!why.empty());
    for (const auto& r : b.records) {
        FUZZ_CHECK(r.length > 0 && r.dpa <= kMax - (r.length - 1));
        FUZZ_CHECK(r.memdev.starts_with("mem"));
        FUZZ_CHECK(r.hpa.size() <= 2 && (r.hpa.empty() || !r.region.empty()));
        for (const auto& h : r.hpa)
            FUZZ_CHECK(h.length == r.length && h.start <= kMax - (h.length - 1));
    }
    for (const auto& e : b.dc_events) {
        FUZZ_CHECK(e.memdev.starts_with("mem"));
        FUZZ_CHECK(e.length == 0 || e.dpa_start <= kMax - (e.length - 1));
    }
    // Every record takes at least 8 bytes of the page (header and id).
    FUZZ_CHECK(b.records.size() + b.dc_events.size() + b.malformed.size() <= size / 4 + 1);
    return 0;
}
