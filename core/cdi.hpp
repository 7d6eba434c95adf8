// SPDX-License-Identifier: Apache-2.0
// The Container Device Interface (CDI) spec of the usable tags: what podman,
// CRI-O, containerd and Docker read from /etc/cdi and /var/run/cdi to hand a
// device to a container (`--device tagmem.io/tag=<tag>`). Pure logic: tagmemfs
// writes it (fs/cdi_file.hpp), `tagmem cdi` prints it; docs/containers.md
// explains the shape.
//
// A CDI device per usable tag gives the container exactly what the host has
// for that tag: the tag directory bind-mounted read-only at the same path,
// the character node its `data` link leads to (and /dev/daxX.Y, where `dev`
// leads), made with the tag's owner and mode, and the device-cgroup rule for
// that one device number.
#pragma once

#include "tag_record.hpp"

#include <sys/types.h>

#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace tagmem {

// The version Debian 12's podman 4.3 (CDI library 0.5) reads; 0.5.0 is the
// first with uid/gid on device nodes, which the tag's owner needs.
inline constexpr const char* kCdiVersion = "0.5.0";
// vendor/class: the vendor must look like a domain name (CDI's rule).
inline constexpr const char* kCdiKind = "tagmem.io/tag";
// tagmemfs keeps one spec file per usable tag, tagmem-<uuid>.json: a change
// of one tag rewrites one small file (two when a name becomes shared or
// unshared), where a single spec of 10,000 tags was 7 MB rewritten at every
// change. CDI merges the devices of every spec file of a kind.
inline constexpr const char* kCdiFilePrefix = "tagmem-";
inline constexpr const char* kCdiFileSuffix = ".json";
// The single spec of tagmemfs before per-tag files: removed at start, as a
// crashed older daemon may have left it, and its devices would conflict.
inline constexpr const char* kCdiLegacyFileName = "tagmem.json";

std::string cdi_file_name(const Uuid& tag);
// The tag a file name of tagmemfs's pattern names; nothing for any other.
std::optional<Uuid> cdi_file_tag(std::string_view file_name);

// What a tag's CDI device is made of: the spec changes exactly when one of
// these does, so the daemon compares these rather than whole records.
struct CdiDevice {
    Uuid tag;
    std::string name;   // configured name, may be empty
    std::string device; // daxX.Y
    DevNumber devno;
    uid_t uid = 0;
    gid_t gid = 0;
    mode_t mode = 0600;
    auto operator<=>(const CdiDevice&) const = default;
};

// Where tagmemfs publishes: the spec's paths are the host's, and the same
// inside the container.
struct CdiPaths {
    std::string mount_point = "/run/tagmem";
    std::string nodes_dir; // empty: <mount_point>.nodes
    std::string nodes() const { return nodes_dir.empty() ? mount_point + ".nodes" : nodes_dir; }
};

// CDI's device-name rule: letters, digits, '_', '-', '.', ':', starting and
// ending with a letter or digit.
bool is_cdi_device_name(std::string_view name);

// The tag's CDI device, or nothing when the tag is not usable.
std::optional<CdiDevice> cdi_device_of(const TagRecord& record);

using CdiDevices = std::map<Uuid, CdiDevice>;

// A tag's CDI devices that stop meaning its device: the tag is no longer
// usable, or its device number changed. A container started with one of
// these names holds a device rule (and a node) for `devno`, which the
// kernel hands to the next dax device it makes: that container can then
// open whatever memory gets that number. The watch socket says so with the
// tag's event, so that an orchestrator stops those containers
// (docs/containers.md).
struct CdiRevocation {
    Uuid tag;
    std::vector<std::string> names; // fully qualified: tagmem.io/tag=<name>
    DevNumber devno;                // the number the containers hold
};

// Keeps the CDI view of the published tags up to date from deltas.
class CdiSet {
  public:
    // The tags whose own spec changed: their device, or whether their name
    // is an alias (a name that became shared or unshared changes the specs
    // of the other tags with that name too). Each at most once.
    std::vector<Uuid> apply(const TagDelta& delta);
    // What the delta revokes, asked before apply(): the tags that had a
    // CDI device and lose it or change device number, with the names
    // engines knew them by (the tag, and the alias it had).
    std::vector<CdiRevocation> revoked_by(const TagDelta& delta) const;
    const CdiDevices& devices() const { return devices_; }
    // Whether the tag's configured name is also a device name of its own.
    bool has_alias(const Uuid& tag) const;
    // The spec file of one tag (as cdi_spec() with that tag alone, but with
    // the alias rule of the whole set); nothing when the tag is not usable.
    std::optional<std::string> spec_of(const Uuid& tag, const CdiPaths& paths) const;

  private:
    void add_name(const std::string& name, const Uuid& tag, std::vector<Uuid>& changed);
    void drop_name(const std::string& name, const Uuid& tag, std::vector<Uuid>& changed);
    CdiDevices devices_;
    // Usable tags by configured name: an alias is given only to a name
    // with exactly one tag.
    std::map<std::string, std::set<Uuid>, std::less<>> by_name_;
};

// The spec, as compact JSON text: one device named by each tag, and one by
// its configured name where that name is a valid CDI device name, not a UUID
// and not shared by another usable tag. nullopt when no tag is usable: CDI
// rejects a spec without devices.
std::optional<std::string> cdi_spec(const CdiDevices& devices, const CdiPaths& paths);

} // namespace tagmem
