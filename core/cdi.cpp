// SPDX-License-Identifier: Apache-2.0
#include "cdi.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <iterator>

namespace tagmem {
namespace {

using nlohmann::json;

bool is_alnum(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

// A JSON string literal, quoted and escaped. Bytes that are not UTF-8 (a
// path may hold any) become U+FFFD rather than an exception.
std::string json_string(std::string_view text) {
    return json(text).dump(-1, ' ', false, json::error_handler_t::replace);
}

// Written with fmt rather than built as a json value: at 10,000 tags the
// spec is 5 MB, and building it as a tree took 200 ms per change where
// formatting takes a few (docs/containers.md). Every string that is not a
// tag, a number or a constant goes through json_string().
struct Writer {
    std::string& out;
    std::string mount;      // "<mount point>/ (quoted, without the closing quote)
    std::string nodes;      // "<nodes dir>/  (the same)
    std::string mount_text; // the mount point as it is, for the env values

    // One device node with the tag's owner and mode. uid and gid always:
    // left out, podman gives the node to the container's user, which would
    // let any user of the container map the memory.
    void node(std::string_view path_json, const CdiDevice& d) {
        fmt::format_to(std::back_inserter(out),
                       R"({{"path":{},"type":"c","major":{},"minor":{},"fileMode":{},"uid":{},)"
                       R"("gid":{},"permissions":"rw"}})",
                       path_json, d.devno.major, d.devno.minor, d.mode & 0777, d.uid, d.gid);
    }

    void device(std::string_view name_json, const CdiDevice& d, const std::string& tag) {
        auto it = std::back_inserter(out);
        fmt::format_to(it, R"({{"name":{},"containerEdits":{{"deviceNodes":[)", name_json);
        // The node where `data` leads and the one where `dev` leads: both
        // links resolve inside the container as they do on the host.
        node(fmt::format("{}{}\"", nodes, tag), d);
        out += ',';
        node(json_string("/dev/" + d.device), d);
        const std::string dir = fmt::format("{}{}\"", mount, tag);
        fmt::format_to(it,
                       R"(],"mounts":[{{"hostPath":{},"containerPath":{},)"
                       R"("options":["bind","ro","nosuid","nodev"]}}],"env":[)",
                       dir, dir);
        const std::string dir_text = fmt::format("{}/{}", mount_text, tag);
        fmt::format_to(it, "{},{},{}]}}}}", json_string("TAGMEM_TAG=" + tag),
                       json_string("TAGMEM_DIR=" + dir_text),
                       json_string("TAGMEM_DATA=" + dir_text + "/data"));
    }
};

// "text" -> "text/ : a quoted prefix that a tag and a closing quote complete.
std::string open_prefix(const std::string& dir) {
    std::string q = json_string(dir + "/");
    q.pop_back();
    return q;
}

} // namespace

bool is_cdi_device_name(std::string_view name) {
    if (name.empty() || !is_alnum(name.front()) || !is_alnum(name.back()))
        return false;
    for (char c : name)
        if (!is_alnum(c) && c != '_' && c != '-' && c != '.' && c != ':')
            return false;
    return true;
}

std::optional<CdiDevice> cdi_device_of(const TagRecord& r) {
    const ProbedDevice* p = r.device();
    if (!r.usable() || !p)
        return std::nullopt;
    return CdiDevice{r.tag,        r.name.str(), p->dev.name,  p->dev.devno,
                     r.access.uid, r.access.gid, r.access.mode};
}

bool CdiSet::apply(const TagDelta& delta) {
    bool changed = false;
    for (const auto& tag : delta.removals)
        changed |= devices_.erase(tag) > 0;
    for (const auto& r : delta.upserts) {
        auto d = cdi_device_of(*r);
        if (!d) {
            changed |= devices_.erase(r->tag) > 0;
            continue;
        }
        auto [it, added] = devices_.try_emplace(r->tag, *d);
        if (!added && it->second != *d) {
            it->second = std::move(*d);
            added = true;
        }
        changed |= added;
    }
    return changed;
}

std::optional<std::string> cdi_spec(const CdiDevices& devices, const CdiPaths& paths) {
    if (devices.empty())
        return std::nullopt;
    // A name two usable tags share would make one CDI name mean either: such
    // a name gets no device at all.
    std::map<std::string_view, int> uses;
    for (const auto& [tag, d] : devices)
        if (!d.name.empty())
            ++uses[d.name];
    std::string out;
    out.reserve(devices.size() * 700 + 100);
    Writer w{out, open_prefix(paths.mount_point), open_prefix(paths.nodes()), paths.mount_point};
    fmt::format_to(std::back_inserter(out), R"({{"cdiVersion":"{}","kind":"{}","devices":[)",
                   kCdiVersion, kCdiKind);
    bool first = true;
    for (const auto& [tag, d] : devices) {
        const std::string text = tag.str();
        if (!d.name.empty() && uses[d.name] == 1 && is_cdi_device_name(d.name) &&
            !Uuid::parse(d.name)) {
            out += first ? "" : ",";
            w.device(json_string(d.name), d, text);
            first = false;
        }
        out += first ? "" : ",";
        w.device(fmt::format("\"{}\"", text), d, text);
        first = false;
    }
    out += "]}\n";
    return out;
}

} // namespace tagmem
