// SPDX-License-Identifier: Apache-2.0
// Handing tags to a QEMU guest (docs/vm.md): which tags may go, where they
// land in the guest's physical address space, and the QEMU arguments, guest
// kernel parameters and libvirt XML that put them there. Pure logic over the
// tag objects of tag_to_json (what tagmemfs or a scan says); the CLI asks,
// this decides and renders.
//
// Each tag becomes its own guest NUMA node (nodes 1..N in the order given,
// node 0 is the guest's RAM), backed by a memory-backend-file on
// <mount point>/<tag>/data with share=on; the guest kernel's
// memmap=SIZE%START-1+0xefffffff makes the range soft-reserved so dax_hmem
// turns it into a devdax without writing into it; the metadata travels in
// the fw_cfg item opt/org.tagmem/tags (its format: docs/vm.md).
#pragma once

#include "result.hpp"
#include "uuid.hpp"

#include <nlohmann/json.hpp>

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tagmem::vm {

inline constexpr std::uint64_t kMiB = 1ull << 20;
inline constexpr std::uint64_t kGiB = 1ull << 30;
inline constexpr std::uint64_t k4GiB = 4 * kGiB;
// Guest ranges start and end on 2 MiB: dax_hmem's devices and the kernel's
// memmap= ranges need it, and QEMU maps its backends in 2 MiB steps.
inline constexpr std::uint64_t kGuestAlign = 2 * kMiB;
inline constexpr std::string_view kFwCfgName = "opt/org.tagmem/tags";
inline constexpr std::size_t kFwCfgMax = 64 * 1024; // the contract's limit
// QEMU 7.2's MAX_NODES is 128; node 0 is the guest's RAM.
inline constexpr std::size_t kMaxTags = 127;
// Of x86's 2048-byte kernel command line, what the memmap= parameters may
// take, leaving the rest to the guest's own parameters.
inline constexpr std::size_t kMaxKernelParamBytes = 1024;
// Where guest RAM must end: below AMD's HyperTransport hole at 1012 GiB
// less QEMU's 32 GiB 64-bit PCI window. Beyond it QEMU 7.2 either refuses
// to start (phys-bits 40: "Address space limit ... phys-bits too low") or,
// with more phys-bits and an AMD CPU model (TCG's default), silently moves
// all RAM above 4 GiB to 1 TiB, and every guest_start would be wrong
// (docs/vm.md). Measured: a tag ending at 980 GiB starts, one at 981 fails.
inline constexpr std::uint64_t kDefaultPhysLimit = 980ull << 30;

// pc: i440fx (QEMU puts at most 3 GiB of RAM below 4 GiB); q35: at most
// 2 GiB (QEMU 7.2 pc_piix.c and pc_q35.c).
enum class MachineFamily { pc, q35 };

struct GuestSpec {
    std::uint64_t ram_size = kGiB; // guest RAM, node 0
    unsigned cpus = 1;             // all on node 0
    std::string machine = "pc";    // pc, q35 or a versioned pc-i440fx-*/pc-q35-*
    std::string mount_point = "/run/tagmem";
    std::uint64_t phys_limit = kDefaultPhysLimit;
};

// Why a request cannot be honoured. Each has its own exit code in tagmem(1).
enum class Refusal {
    unknown_tag, // no device carries the tag
    conflict,    // several devices claim it
    not_usable,  // system-ram, disabled, offered, no-node, not devdax
    layout,      // the tags do not fit a guest (sizes, address space, limits)
    usage,       // the request itself is wrong (duplicate tag, bad machine)
};

struct Refused {
    Refusal why = Refusal::usage;
    std::string message;
};

// What both hand-off mechanisms refuse alike in a request, each where its
// planner checks it: guest RAM that is not a positive multiple of 2 MiB; a
// mount point that is not absolute or holds control characters (it goes
// into the guest's item and command lines); a tag asked for twice.
std::optional<Refused> ram_refusal(std::uint64_t ram_size);
std::optional<Refused> mount_point_refusal(const std::string& mount_point);
std::vector<Refused> duplicate_tag_refusals(const std::vector<Uuid>& wanted);

// The tag's object (in `tags`, an array of tag_to_json objects) when it may
// go to a guest: ready, one devdax device with a size; else why not. Both
// hand-off mechanisms ask this.
struct Checked {
    const nlohmann::json* tag = nullptr;
    std::optional<Refused> refused;
};
Checked check_tag(const nlohmann::json& tags, const Uuid& wanted);
// What the guest is told of the host's device: device, numa_node, source,
// and the performance figures the host knows (only the contract's keys).
nlohmann::json host_json(const nlohmann::json& tag);

struct PlacedTag {
    std::string tag; // canonical lower case
    std::string name;
    bool shareable = false;
    std::uint64_t size = 0;
    std::uint64_t align = 0; // the host device's
    std::uint64_t guest_start = 0;
    unsigned guest_node = 0;
    std::string object_id; // tagmem<node>
    std::string mem_path;  // <mount point>/<tag>/data
    nlohmann::json host;   // device, numa_node, source, performance (contract item 2)
    nlohmann::json access; // as tag_to_json says: owner, group, uid, gid, mode
};

struct Plan {
    GuestSpec guest;
    MachineFamily family = MachineFamily::pc;
    std::uint64_t ram_below_4g = 0; // node 0's part below 4 GiB
    std::uint64_t total = 0;        // -m: RAM plus every tag
    std::vector<PlacedTag> tags;    // in the order asked
    std::vector<std::string> warnings;
};

struct PlanResult {
    std::optional<Plan> plan;     // when nothing was refused
    std::vector<Refused> refused; // every reason, in the order of the tags
};

// Decides and lays out. `tags` is an array of tag_to_json objects (the
// "tags" of a list); `wanted` the tags asked for, in order.
PlanResult plan_handoff(const nlohmann::json& tags, const std::vector<Uuid>& wanted,
                        const GuestSpec& guest);

// Sizes as QEMU's -m takes them: a number of MiB, or with a suffix
// K, M, G, T (also KiB, MiB, GiB, TiB; powers of 1024), or B for bytes.
Result<std::uint64_t> parse_size(std::string_view text);

// QEMU's option escaping: every ',' doubled.
std::string qemu_escape(std::string_view value);
// A word the POSIX shell reads back as exactly `arg`.
std::string shell_quote(std::string_view arg);

// The fw_cfg item's content (contract item 2), compact UTF-8 JSON.
std::string handoff_json(const Plan& plan);
// memmap=<size>%<start>-1+0xefffffff per tag, space-separated.
std::string kernel_params(const Plan& plan);
// The QEMU arguments, one element per argv word.
std::vector<std::string> qemu_args(const Plan& plan);
// A libvirt domain XML fragment (a <domain> holding only what to merge).
std::string libvirt_xml(const Plan& plan);
// Everything above as one JSON object (--format json).
nlohmann::json plan_json(const Plan& plan);

// Whether a process of this uid and these groups may open the tag's data
// read-write (as a VMM with share=on does), by the owner/group/mode of
// tag_to_json's "access". nullopt when access is missing or malformed.
std::optional<bool> may_open_rw(const nlohmann::json& access, uid_t uid,
                                const std::vector<gid_t>& groups);

} // namespace tagmem::vm
