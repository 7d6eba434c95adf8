// SPDX-License-Identifier: Apache-2.0
// Parsers for the text of sysfs attributes. The kernel writes one value and a
// newline; anything else (empty, truncated, trailing junk) is an error that
// names the attribute, because a half-written or vanished file must never be
// mistaken for a value.
#pragma once

#include "result.hpp"
#include "uuid.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tagmem {

// Strips one trailing newline and surrounding blanks.
std::string_view trim_attr(std::string_view text);

// Decimal, or hexadecimal with a 0x prefix (the kernel prints both: %llu, %#llx).
Result<std::uint64_t> parse_u64(std::string_view text);
Result<std::int64_t> parse_i64(std::string_view text);

struct DevNumber {
    unsigned major = 0;
    unsigned minor = 0;
    auto operator<=>(const DevNumber&) const = default;
};
// "M:m" as in a device's `dev` attribute.
Result<DevNumber> parse_dev_number(std::string_view text);

// The `uuid` of a DCD dax device: a tag, or "no tag" (all-zero UUID, or the
// `0` printed by older series), returned as std::nullopt.
Result<std::optional<Uuid>> parse_tag_attr(std::string_view text);

// "<prefix><digits>.<digits>", as in namespace0.1 or extent2.15: the names
// the kernel gives; anything else found in sysfs is not one of them.
bool is_numbered_name(std::string_view name, std::string_view prefix);

// A path's directory and last component, split at the last '/'
// ("/a/b" -> "/a" and "b"; "b" -> "" and "b"). Lexical: sysfs paths here
// are already resolved.
std::string_view parent_path(std::string_view path);
std::string_view base_name(std::string_view path);

// A plain UUID attribute (NVDIMM namespace and info-block uuid).
Result<Uuid> parse_uuid_attr(std::string_view text);

// "0"/"1", "true"/"false", "yes"/"no", "on"/"off".
Result<bool> parse_bool(std::string_view text);

// Sizes in configuration: bytes, or with a K/M/G/T suffix (powers of 1024).
Result<std::uint64_t> parse_size(std::string_view text);

} // namespace tagmem
