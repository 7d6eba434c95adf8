// SPDX-License-Identifier: Apache-2.0
// The cxl:cxl_poison event's description, as the kernel declares it in
// tracefs's events/cxl/cxl_poison/format (docs/health.md, "CXL poison").
//
// trace_pipe's text (the event's TP_printk) is not kernel ABI; the format
// file is, and it says which fields the event has, their types and sizes,
// and the print format trace_pipe uses. libtraceevent parses it (as ndctl's
// util/event_trace.c does). tagmemfs reads trace_pipe's text, so the format
// is what makes that text trustworthy: the fields tagmem uses must be there
// with the types it expects, and the print format must be one whose text
// the line parser reads field by field (with or without hpa_alias0, Linux
// 6.15). Any other format is refused with the reason, before a single line
// is read, rather than lines being misread.
#pragma once

#include "result.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace tagmem {

struct PoisonFormat {
    int id = 0;                    // the event's id (common_type)
    bool hpa_alias0 = false;       // the field and its "hpa_alias0=" (Linux 6.15 on)
    std::vector<std::string> keys; // the print format's "key=" in order
};

// Parses a format file's text with libtraceevent and checks it against what
// parse_cxl_poison_line reads. EINVAL with the reason otherwise.
Result<PoisonFormat> parse_poison_format(std::string_view text);

} // namespace tagmem
