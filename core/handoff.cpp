// SPDX-License-Identifier: Apache-2.0
#include "handoff.hpp"

#include "host_os.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <limits>
#include <set>

namespace tagmem {
namespace {

using nlohmann::json;

constexpr int kMaxDepth = 32; // the format needs 5; unknown keys may nest a little
constexpr std::int64_t kMaxNode = 1 << 16;
constexpr std::uint64_t kHandoffAlign = 2 << 20;

Error bad(std::string what) {
    return make_error(EINVAL, fmt::format("{}: {}", kHandoffItem, what));
}

// The nesting depth of JSON text, strings skipped: refused before parsing,
// so that a hostile item cannot make the parser or the destructor recurse
// deeply.
int max_depth(std::string_view text) {
    int depth = 0, deepest = 0;
    bool in_string = false, escaped = false;
    for (char c : text) {
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
            continue;
        }
        if (c == '"')
            in_string = true;
        else if (c == '[' || c == '{')
            deepest = std::max(deepest, ++depth);
        else if (c == ']' || c == '}')
            --depth;
    }
    return deepest;
}

// A JSON integer >= 0 (not a float, not a bool).
Result<std::uint64_t> get_u64(const json& obj, const char* key, const std::string& where) {
    auto it = obj.find(key);
    if (it == obj.end())
        return bad(fmt::format("{}: \"{}\" is missing", where, key));
    if (!it->is_number_unsigned())
        return bad(fmt::format("{}: \"{}\" must be an integer >= 0", where, key));
    return it->get<std::uint64_t>();
}

Result<std::string> get_string(const json& obj, const char* key, const std::string& where) {
    auto it = obj.find(key);
    if (it == obj.end())
        return bad(fmt::format("{}: \"{}\" is missing", where, key));
    if (!it->is_string())
        return bad(fmt::format("{}: \"{}\" must be a string", where, key));
    return it->get<std::string>();
}

Status read_host(const json& host, HandoffEntry& e, const std::string& where) {
    if (!host.is_object())
        return bad(fmt::format("{}: \"host\" must be an object", where));
    if (host.contains("device")) {
        auto v = get_string(host, "device", where + " host");
        if (!v)
            return v.error();
        e.host_device = *v;
    }
    if (host.contains("source")) {
        auto v = get_string(host, "source", where + " host");
        if (!v)
            return v.error();
        e.host_source = *v;
    }
    if (auto it = host.find("numa_node"); it != host.end()) {
        if (!it->is_number_integer() || it->get<std::int64_t>() < -1 ||
            it->get<std::int64_t>() > kMaxNode)
            return bad(fmt::format("{} host: \"numa_node\" must be an integer from -1 to {}", where,
                                   kMaxNode));
        e.host_numa_node = static_cast<int>(it->get<std::int64_t>());
    }
    auto perf = host.find("performance");
    if (perf == host.end())
        return Ok{};
    if (!perf->is_object())
        return bad(fmt::format("{} host: \"performance\" must be an object", where));
    for (auto [key, field] :
         {std::pair{"read_latency_ns", &e.host_performance.read_latency_ns},
          std::pair{"write_latency_ns", &e.host_performance.write_latency_ns},
          std::pair{"read_bandwidth_mbps", &e.host_performance.read_bandwidth_mbps},
          std::pair{"write_bandwidth_mbps", &e.host_performance.write_bandwidth_mbps}}) {
        if (!perf->contains(key))
            continue;
        auto v = get_u64(*perf, key, where + " host performance");
        if (!v)
            return v.error();
        *field = *v;
    }
    return Ok{};
}

Result<HandoffEntry> read_entry(const json& j, std::size_t index) {
    std::string where = fmt::format("tags[{}]", index);
    if (!j.is_object())
        return bad(where + ": not an object");
    HandoffEntry e;
    auto tag_text = get_string(j, "tag", where);
    if (!tag_text)
        return tag_text.error();
    auto tag = Uuid::parse(*tag_text);
    if (!tag)
        return bad(fmt::format("{}: \"tag\": {}", where, tag.error().message));
    if (tag->str() != *tag_text)
        return bad(fmt::format("{}: \"tag\" must be written in lowercase: '{}'", where, *tag_text));
    if (tag->is_nil())
        return bad(where + ": \"tag\" is the nil UUID");
    e.tag = *tag;
    where = fmt::format("tags[{}] ({})", index, e.tag.str());
    auto name = get_string(j, "name", where);
    if (!name)
        return name.error();
    e.name = *name;
    auto shareable = j.find("shareable");
    if (shareable == j.end() || !shareable->is_boolean())
        return bad(where + ": \"shareable\" must be true or false");
    e.shareable = shareable->get<bool>();
    auto size = get_u64(j, "size", where);
    if (!size)
        return size.error();
    auto start = get_u64(j, "guest_start", where);
    if (!start)
        return start.error();
    if (*size == 0)
        return bad(where + ": \"size\" is 0");
    // The host places every tag 2 MiB aligned (dax_hmem's devices are).
    if (*size % kHandoffAlign || *start % kHandoffAlign)
        return bad(where + ": \"size\" and \"guest_start\" must be multiples of 2 MiB");
    if (*start > std::numeric_limits<std::uint64_t>::max() - *size)
        return bad(where + ": \"guest_start\" + \"size\" is beyond the address space");
    e.size = *size;
    e.guest_start = *start;
    auto node = get_u64(j, "guest_node", where);
    if (!node)
        return node.error();
    if (*node > static_cast<std::uint64_t>(kMaxNode))
        return bad(fmt::format("{}: \"guest_node\" above {}", where, kMaxNode));
    e.guest_node = static_cast<int>(*node);
    if (auto host = j.find("host"); host != j.end())
        if (auto ok = read_host(*host, e, where); !ok)
            return ok.error();
    return e;
}

// An entry of "cxl": the tag, name, shareable flag and size as above, the
// device it arrives on; no guest range (the guest kernel places it).
Result<HandoffEntry> read_cxl_entry(const json& j, std::size_t index) {
    std::string where = fmt::format("cxl.tags[{}]", index);
    if (!j.is_object())
        return bad(where + ": not an object");
    HandoffEntry e;
    auto tag_text = get_string(j, "tag", where);
    if (!tag_text)
        return tag_text.error();
    auto tag = Uuid::parse(*tag_text);
    if (!tag || tag->str() != *tag_text || tag->is_nil())
        return bad(fmt::format("{}: \"tag\" is not a lowercase non-nil UUID", where));
    e.tag = *tag;
    where = fmt::format("cxl.tags[{}] ({})", index, e.tag.str());
    auto name = get_string(j, "name", where);
    if (!name)
        return name.error();
    e.name = *name;
    auto shareable = j.find("shareable");
    if (shareable == j.end() || !shareable->is_boolean())
        return bad(where + ": \"shareable\" must be true or false");
    e.shareable = shareable->get<bool>();
    auto size = get_u64(j, "size", where);
    if (!size)
        return size.error();
    if (*size == 0 || *size % kHandoffAlign)
        return bad(where + ": \"size\" must be a positive multiple of 2 MiB");
    e.size = *size;
    auto device = get_string(j, "device", where);
    if (!device)
        return device.error();
    e.cxl_device = *device;
    if (j.contains("serial")) {
        auto serial = get_u64(j, "serial", where);
        if (!serial)
            return serial.error();
        e.cxl_serial = *serial;
    }
    if (auto cdat = j.find("cdat_from_host"); cdat != j.end()) {
        if (!cdat->is_boolean())
            return bad(where + ": \"cdat_from_host\" must be true or false");
        e.cxl_cdat_from_host = cdat->get<bool>();
    }
    if (auto host = j.find("host"); host != j.end())
        if (auto ok = read_host(*host, e, where); !ok)
            return ok.error();
    return e;
}

Status read_cxl(const json& cxl, Handoff& h) {
    if (!cxl.is_object())
        return bad("\"cxl\" must be an object");
    if (auto m = cxl.find("make_dc_regions"); m != cxl.end()) {
        if (!m->is_boolean())
            return bad("\"cxl\": \"make_dc_regions\" must be true or false");
        h.make_dc_regions = m->get<bool>();
    }
    auto tags = cxl.find("tags");
    if (tags == cxl.end() || !tags->is_array())
        return bad("\"cxl\": \"tags\" must be an array");
    for (std::size_t i = 0; i < tags->size(); ++i) {
        auto e = read_cxl_entry((*tags)[i], i);
        if (!e)
            return e.error();
        h.cxl.push_back(std::move(*e));
    }
    return Ok{};
}

} // namespace

const HandoffEntry* Handoff::match_cxl(const Uuid& tag) const {
    for (const auto& e : cxl)
        if (e.tag == tag)
            return &e;
    return nullptr;
}

const HandoffEntry* Handoff::match(const DaxDevice& dev) const {
    if (dev.ranges.size() != 1)
        return nullptr;
    for (const auto& e : entries)
        if (dev.ranges[0] == e.range() && dev.target_node == e.guest_node)
            return &e;
    return nullptr;
}

Result<Handoff> parse_handoff(std::string_view text) {
    if (text.size() > kHandoffMaxBytes)
        return bad(
            fmt::format("{} bytes, more than the {} allowed", text.size(), kHandoffMaxBytes));
    // QEMU's `-fw_cfg string=` item ends in the string's NUL.
    while (!text.empty() && text.back() == '\0')
        text.remove_suffix(1);
    if (max_depth(text) > kMaxDepth)
        return bad(fmt::format("nested deeper than {} levels", kMaxDepth));
    json j = json::parse(text.begin(), text.end(), nullptr, false);
    if (j.is_discarded())
        return bad("not valid JSON");
    if (!j.is_object())
        return bad("not a JSON object");
    auto format = j.find("format");
    if (format == j.end() || !format->is_string() || format->get<std::string>() != "tagmem-handoff")
        return bad("\"format\" is not \"tagmem-handoff\"");
    auto version = j.find("version");
    if (version == j.end() || !version->is_number_unsigned() || version->get<std::uint64_t>() != 1)
        return bad(fmt::format("\"version\" {} is not supported (this tagmem reads version 1)",
                               version == j.end() ? "missing" : version->dump()));
    auto tags = j.find("tags");
    if (tags == j.end() || !tags->is_array())
        return bad("\"tags\" must be an array");
    Handoff h;
    std::set<Uuid> seen_tags;
    std::set<int> seen_nodes;
    for (std::size_t i = 0; i < tags->size(); ++i) {
        auto e = read_entry((*tags)[i], i);
        if (!e)
            return e.error();
        if (!seen_tags.insert(e->tag).second)
            return bad(fmt::format("tags[{}]: tag {} is listed twice", i, e->tag.str()));
        if (!seen_nodes.insert(e->guest_node).second)
            return bad(fmt::format("tags[{}] ({}): guest node {} is given to another tag too", i,
                                   e->tag.str(), e->guest_node));
        h.entries.push_back(std::move(*e));
    }
    if (auto cxl = j.find("cxl"); cxl != j.end())
        if (auto ok = read_cxl(*cxl, h); !ok)
            return ok.error();
    // One tag arrives one way.
    for (const auto& c : h.cxl)
        if (!seen_tags.insert(c.tag).second)
            return bad(fmt::format("tag {} is listed twice", c.tag.str()));
    // Overlapping ranges: sorted by start, each must end before the next.
    std::vector<const HandoffEntry*> by_start;
    for (const auto& e : h.entries)
        by_start.push_back(&e);
    std::sort(by_start.begin(), by_start.end(),
              [](auto* a, auto* b) { return a->guest_start < b->guest_start; });
    for (std::size_t i = 1; i < by_start.size(); ++i)
        if (by_start[i]->guest_start <= by_start[i - 1]->range().end)
            return bad(fmt::format("the ranges of tags {} and {} overlap",
                                   by_start[i - 1]->tag.str(), by_start[i]->tag.str()));
    return h;
}

Result<Handoff> read_handoff(HostOs& os) {
    auto text = os.read_file(kHandoffPath);
    if (!text) {
        if (text.error().code == ENOENT || text.error().code == ENOTDIR) {
            auto dir = os.lstat_node(kFwCfgByName);
            if (dir && dir->type == NodeType::directory)
                return Handoff{}; // the driver lists the items, this is not one
            if (!dir && is_transient(dir.error().code))
                return dir.error();
            return make_error(ENODEV,
                              fmt::format("{}: the qemu_fw_cfg driver is not bound", kHandoffItem));
        }
        if (text.error().code == EFBIG)
            return bad(fmt::format("larger than the {} bytes allowed", kHandoffMaxBytes));
        return text.error();
    }
    return parse_handoff(*text);
}

Status mark_explicit_online(const Uuid& tag, HostOs& os) {
    for (const std::string& dir :
         {std::string(kExplicitOnlineDir), fmt::format("{}/{}", kExplicitOnlineDir, tag.str())})
        if (auto made = os.make_dir(dir); !made && made.error().code != EEXIST)
            return made.error();
    return Ok{};
}

Status clear_explicit_online(const Uuid& tag, HostOs& os) {
    auto removed = os.remove_dir(fmt::format("{}/{}", kExplicitOnlineDir, tag.str()));
    if (!removed && removed.error().code != ENOENT)
        return removed.error();
    (void)os.remove_dir(kExplicitOnlineDir); // when it was the last mark
    return Ok{};
}

Result<bool> is_explicitly_online(const Uuid& tag, HostOs& os) {
    auto mark = os.lstat_node(fmt::format("{}/{}", kExplicitOnlineDir, tag.str()));
    if (mark)
        return true;
    if (mark.error().code == ENOENT || mark.error().code == ENOTDIR)
        return false;
    return mark.error();
}

} // namespace tagmem
