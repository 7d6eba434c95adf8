// SPDX-License-Identifier: Apache-2.0
// /etc/tagmem/tagmem.conf: INI-style (parsed by inih), one section per tag.
//
//   # Comments take whole lines ('#' or ';').
//   [tag 6f1c2d3e-0000-4000-8000-000000000001]
//   name        = scratch-pool
//   match-range = 0x1040000000-0x107fffffff
//   match-node  = 2
//   shareable   = yes
//   owner       = famfs
//   group       = famfs
//   mode        = 0660
//   online      = allow      # tagmem online may make it system RAM
//   online-shareable = allow # ... even though it is shareable
//   claim       = manual     # offered DCD capacity waits for `tagmem claim`
//
//   [defaults]               # what applies to every tag not saying otherwise
//   claim       = manual
//
// match-* tag memory that carries no UUID of its own; owner/group/mode decide
// who may open the tag's data (default root:root 0600). See tagmem.conf(5).
// Syntax errors make the whole file invalid; a section with a bad value is
// reported and left out, so the others still apply. Whoever consumes the
// result decides how strict to be (the daemon refuses any error).
#pragma once

#include "result.hpp"
#include "uuid.hpp"

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tagmem {

class HostOs;

inline constexpr const char* kDefaultConfigPath = "/etc/tagmem/tagmem.conf";
// The most tagmem.conf may hold: 64 MiB, some 500,000 sections with every
// key. Its own bound, not a sysfs attribute's (64 KiB, about 300 sections):
// the file is root's, and the bound only keeps a runaway generator from
// exhausting the daemon's memory.
inline constexpr std::size_t kMaxConfigBytes = std::size_t{64} << 20;

// Inclusive physical address range, as /proc/iomem prints it.
struct PhysRange {
    std::uint64_t start = 0;
    std::uint64_t end = 0;
    auto operator<=>(const PhysRange&) const = default;
};

// Whether tagmemfs claims a tag's offered CXL Dynamic Capacity as devdax by
// itself (docs/dcd.md). Claiming never onlines anything.
enum class ClaimMode : std::uint8_t { automatic, manual };

struct TagConfig {
    Uuid tag;
    int line = 0; // where the section starts, for messages
    std::string name;
    std::optional<bool> shareable;
    std::optional<std::string> owner;
    std::optional<std::string> group;
    std::optional<mode_t> mode;
    std::optional<PhysRange> match_range;
    std::optional<int> match_node;
    // The opt-in to `tagmem online`/`offline` (docs/online.md): deny unless
    // said. A shareable tag needs both: onlining zeroes nothing but hands the
    // capacity to this host's page allocator, which other hosts sharing it
    // cannot know.
    bool online = false;
    bool online_shareable = false;
    std::optional<ClaimMode> claim; // unset: Config::claim

    bool has_match() const { return match_range || match_node; }
};

struct Config {
    std::string origin; // file the configuration came from, for messages
    std::map<Uuid, TagConfig> tags;
    std::vector<std::string> errors;        // one line per problem, with file:line
    ClaimMode claim = ClaimMode::automatic; // [defaults] claim

    // The claim mode in force for a tag: its own section's, else [defaults].
    ClaimMode claim_mode(const Uuid& tag) const {
        const TagConfig* t = find(tag);
        return t && t->claim ? *t->claim : claim;
    }

    const TagConfig* find(const Uuid& tag) const {
        auto it = tags.find(tag);
        return it == tags.end() ? nullptr : &it->second;
    }
};

// Parses text; never fails as a whole: problems land in Config::errors.
Config parse_config(std::string_view text, std::string origin);

// Reads (at most kMaxConfigBytes) and parses a file. A missing file is an
// empty configuration when missing_ok (the default path), an error
// otherwise; any other failed read is an error, never an empty
// configuration. Owners and groups are
// checked against the user database so that a typo is reported at load time
// rather than when a tag appears.
Config load_config(const std::string& path, bool missing_ok, HostOs& os);

Result<PhysRange> parse_phys_range(std::string_view text);
Result<mode_t> parse_mode(std::string_view text);
// allow or deny, nothing else (no yes/no: the word says what it does).
Result<bool> parse_allow(std::string_view text);

} // namespace tagmem
