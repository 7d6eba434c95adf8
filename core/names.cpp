// SPDX-License-Identifier: Apache-2.0
// The spelling of enums in JSON, tables and messages; part of the stable
// output format (see man/tagmem.1), so never renamed lightly.
#include "device.hpp"
#include "tag_record.hpp"

#include <cstdint>
#include <mutex>
#include <unordered_set>

namespace tagmem {

const std::string& intern_string(std::string_view value) {
    static std::mutex mutex;
    static std::unordered_set<std::string>* pool = new std::unordered_set<std::string>;
    std::lock_guard lock(mutex);
    return *pool->emplace(value).first; // node-based: references stay valid
}

std::optional<ExtentName> ExtentName::parse(std::string_view name) {
    if (!name.starts_with("extent"))
        return std::nullopt;
    name.remove_prefix(6);
    auto number = [](std::string_view d) -> std::optional<std::uint32_t> {
        if (d.empty() || d.size() > 10 || (d.size() > 1 && d[0] == '0'))
            return std::nullopt;
        std::uint64_t v = 0;
        for (char c : d) {
            if (c < '0' || c > '9')
                return std::nullopt;
            v = v * 10 + static_cast<unsigned>(c - '0');
        }
        if (v > UINT32_MAX)
            return std::nullopt;
        return static_cast<std::uint32_t>(v);
    };
    auto dot = name.find('.');
    if (dot == std::string_view::npos)
        return std::nullopt;
    auto region = number(name.substr(0, dot));
    auto index = number(name.substr(dot + 1));
    if (!region || !index)
        return std::nullopt;
    return ExtentName{*region, *index};
}

std::string ExtentName::str() const {
    return "extent" + std::to_string(region) + "." + std::to_string(index);
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
    case ShareableFrom::handoff: return "handoff";
    }
    return "unknown";
}

const char* to_string(TagSource source) {
    switch (source) {
    case TagSource::dcd: return "dcd";
    case TagSource::nvdimm: return "nvdimm";
    case TagSource::config: return "config";
    case TagSource::handoff: return "handoff";
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
    case TagState::no_node: return "no-node";
    }
    return "unknown";
}

} // namespace tagmem
