// SPDX-License-Identifier: Apache-2.0
// The spelling of enums in JSON, tables and messages; part of the stable
// output format (see man/tagmem.1), so never renamed lightly.
#include "device.hpp"
#include "tag_record.hpp"

#include <mutex>
#include <unordered_set>

namespace tagmem {

const std::string& intern_string(std::string_view value) {
    static std::mutex mutex;
    static std::unordered_set<std::string>* pool = new std::unordered_set<std::string>;
    std::lock_guard lock(mutex);
    return *pool->emplace(value).first; // node-based: references stay valid
}

const char* to_string(DevMode mode) {
    switch (mode) {
    case DevMode::devdax: return "devdax";
    case DevMode::system_ram: return "system-ram";
    case DevMode::disabled: return "disabled";
    }
    return "unknown";
}

const char* to_string(ShareableFrom from) {
    switch (from) {
    case ShareableFrom::default_value: return "default";
    case ShareableFrom::config: return "config";
    }
    return "unknown";
}

const char* to_string(TagSource source) {
    switch (source) {
    case TagSource::dcd: return "dcd";
    case TagSource::nvdimm: return "nvdimm";
    case TagSource::config: return "config";
    }
    return "unknown";
}

const char* to_string(TagState state) {
    switch (state) {
    case TagState::ready: return "ready";
    case TagState::system_ram: return "system-ram";
    case TagState::disabled: return "disabled";
    case TagState::conflict: return "conflict";
    case TagState::offered: return "offered";
    }
    return "unknown";
}

} // namespace tagmem
