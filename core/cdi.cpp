// SPDX-License-Identifier: Apache-2.0
#include "cdi.hpp"

#include <fmt/format.h>

namespace tagmem {
namespace {

using nlohmann::json;

bool is_alnum(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

json device_node(const std::string& path, const CdiDevice& d) {
    // uid and gid always: left out, podman gives the node to the container's
    // user, which would let any user of the container map the memory.
    return {{"path", path},
            {"type", "c"},
            {"major", d.devno.major},
            {"minor", d.devno.minor},
            {"fileMode", d.mode & 0777},
            {"uid", d.uid},
            {"gid", d.gid},
            {"permissions", "rw"}};
}

json container_edits(const CdiDevice& d, const CdiPaths& paths) {
    const std::string tag = d.tag.str();
    const std::string dir = fmt::format("{}/{}", paths.mount_point, tag);
    // The node where `data` leads and the one where `dev` leads: both links
    // resolve inside the container as they do on the host.
    return {
        {"deviceNodes", json::array({device_node(fmt::format("{}/{}", paths.nodes(), tag), d),
                                     device_node("/dev/" + d.device, d)})},
        {"mounts", json::array({{{"hostPath", dir},
                                 {"containerPath", dir},
                                 {"options", json::array({"bind", "ro", "nosuid", "nodev"})}}})},
        {"env", json::array({"TAGMEM_TAG=" + tag, "TAGMEM_DIR=" + dir,
                             fmt::format("TAGMEM_DATA={}/data", dir)})}};
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

std::optional<json> cdi_spec(const CdiDevices& devices, const CdiPaths& paths) {
    if (devices.empty())
        return std::nullopt;
    // A name two usable tags share would make one CDI name mean either: such
    // a name gets no device at all.
    std::map<std::string_view, int> uses;
    for (const auto& [tag, d] : devices)
        ++uses[d.name];
    json out = json::array();
    for (const auto& [tag, d] : devices) {
        json edits = container_edits(d, paths);
        if (!d.name.empty() && uses[d.name] == 1 && is_cdi_device_name(d.name) &&
            !Uuid::parse(d.name))
            out.push_back({{"name", d.name}, {"containerEdits", edits}});
        out.push_back({{"name", tag.str()}, {"containerEdits", std::move(edits)}});
    }
    return json{{"cdiVersion", kCdiVersion}, {"kind", kCdiKind}, {"devices", std::move(out)}};
}

} // namespace tagmem
