// SPDX-License-Identifier: Apache-2.0
#include "cdi.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
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

    void header() {
        fmt::format_to(std::back_inserter(out), R"({{"cdiVersion":"{}","kind":"{}","devices":[)",
                       kCdiVersion, kCdiKind);
    }

    // The tag's devices: by its name first where that is an alias, then by
    // the tag.
    void devices(const CdiDevice& d, bool alias, bool first) {
        const std::string text = d.tag.str();
        if (alias) {
            out += first ? "" : ",";
            device(json_string(d.name), d, text);
            first = false;
        }
        out += first ? "" : ",";
        device(fmt::format("\"{}\"", text), d, text);
    }
};

// "text" -> "text/ : a quoted prefix that a tag and a closing quote complete.
std::string open_prefix(const std::string& dir) {
    std::string q = json_string(dir + "/");
    q.pop_back();
    return q;
}

} // namespace

// A configured name that may be a device name when no other usable tag has
// it: a valid CDI name, and not a UUID (which would shadow that tag's own).
static bool alias_allowed(std::string_view name) {
    return is_cdi_device_name(name) && !Uuid::parse(name);
}

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

std::string cdi_file_name(const Uuid& tag) {
    return fmt::format("{}{}{}", kCdiFilePrefix, tag.str(), kCdiFileSuffix);
}

std::optional<Uuid> cdi_file_tag(std::string_view name) {
    const std::string_view prefix = kCdiFilePrefix, suffix = kCdiFileSuffix;
    if (name.size() <= prefix.size() + suffix.size() || !name.starts_with(prefix) ||
        !name.ends_with(suffix))
        return std::nullopt;
    name.remove_prefix(prefix.size());
    name.remove_suffix(suffix.size());
    auto tag = Uuid::parse(name);
    // Only the canonical spelling: a file tagmemfs would not have written
    // under that name is not its own.
    if (!tag || tag->str() != name)
        return std::nullopt;
    return *tag;
}

void CdiSet::add_name(const std::string& name, const Uuid& tag, std::vector<Uuid>& changed) {
    auto& tags = by_name_[name];
    if (tags.size() == 1) // the one tag with this name loses its alias
        changed.push_back(*tags.begin());
    tags.insert(tag);
}

void CdiSet::drop_name(const std::string& name, const Uuid& tag, std::vector<Uuid>& changed) {
    auto it = by_name_.find(name);
    if (it == by_name_.end())
        return;
    it->second.erase(tag);
    if (it->second.size() == 1) // the tag left alone with the name gains its alias
        changed.push_back(*it->second.begin());
    if (it->second.empty())
        by_name_.erase(it);
}

std::vector<Uuid> CdiSet::apply(const TagDelta& delta) {
    std::vector<Uuid> changed;
    auto drop = [&](const Uuid& tag) {
        auto it = devices_.find(tag);
        if (it == devices_.end())
            return;
        const std::string name = std::move(it->second.name);
        devices_.erase(it);
        changed.push_back(tag);
        if (!name.empty())
            drop_name(name, tag, changed);
    };
    for (const auto& tag : delta.removals)
        drop(tag);
    for (const auto& r : delta.upserts) {
        auto d = cdi_device_of(*r);
        if (!d) {
            drop(r->tag);
            continue;
        }
        if (auto it = devices_.find(r->tag); it != devices_.end() && it->second == *d)
            continue;
        drop(r->tag);
        if (!d->name.empty())
            add_name(d->name, r->tag, changed);
        devices_.insert_or_assign(r->tag, std::move(*d));
        changed.push_back(r->tag);
    }
    std::sort(changed.begin(), changed.end());
    changed.erase(std::unique(changed.begin(), changed.end()), changed.end());
    return changed;
}

std::vector<CdiRevocation> CdiSet::revoked_by(const TagDelta& delta) const {
    std::vector<CdiRevocation> out;
    auto revoke = [&](const Uuid& tag, const std::optional<CdiDevice>& now) {
        auto it = devices_.find(tag);
        if (it == devices_.end() || (now && now->devno == it->second.devno))
            return;
        if (std::any_of(out.begin(), out.end(), [&](const auto& r) { return r.tag == tag; }))
            return;
        CdiRevocation r{tag, {fmt::format("{}={}", kCdiKind, tag.str())}, it->second.devno};
        if (has_alias(tag))
            r.names.push_back(fmt::format("{}={}", kCdiKind, it->second.name));
        out.push_back(std::move(r));
    };
    for (const auto& tag : delta.removals)
        revoke(tag, std::nullopt);
    for (const auto& r : delta.upserts)
        revoke(r->tag, cdi_device_of(*r));
    return out;
}

bool CdiSet::has_alias(const Uuid& tag) const {
    auto it = devices_.find(tag);
    if (it == devices_.end())
        return false;
    auto named = by_name_.find(it->second.name);
    return named != by_name_.end() && named->second.size() == 1 && alias_allowed(it->second.name);
}

std::optional<std::string> CdiSet::spec_of(const Uuid& tag, const CdiPaths& paths) const {
    auto it = devices_.find(tag);
    if (it == devices_.end())
        return std::nullopt;
    std::string out;
    out.reserve(1600);
    Writer w{out, open_prefix(paths.mount_point), open_prefix(paths.nodes()), paths.mount_point};
    w.header();
    w.devices(it->second, has_alias(tag), true);
    out += "]}\n";
    return out;
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
    w.header();
    bool first = true;
    for (const auto& [tag, d] : devices) {
        w.devices(d, !d.name.empty() && uses[d.name] == 1 && alias_allowed(d.name), first);
        first = false;
    }
    out += "]}\n";
    return out;
}

} // namespace tagmem
