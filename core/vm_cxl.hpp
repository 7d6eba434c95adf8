// SPDX-License-Identifier: Apache-2.0
// The second VM hand-off (issue 18, docs/vm.md "Emulated CXL Dynamic
// Capacity"): each tag becomes its own emulated CXL type 3 device whose one
// volatile dynamic-capacity region is the tag's data (memory-backend-file,
// share=on), with no capacity at boot. `tagmem vm-attach` later adds one
// extent covering the tag, carrying the tag, over QMP; the guest kernel's
// DCD path shows it as tagged capacity and the guest's tagmemfs claims it.
// `vm-detach` releases it.
//
// Pure logic over the tag objects of tag_to_json, as vm_handoff.hpp: which
// tags may go, the QEMU arguments, the fw_cfg item (the same item as the
// boot-time hand-off, whose version-1 readers ignore the "cxl" key), and
// the QMP commands. The CLI asks and talks to QEMU; this decides.
#pragma once

#include "vm_handoff.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tagmem::vm {

// One device per tag (a DC region is one backend, and a tag is one
// allocation): at most this many root ports on the one host bridge. QEMU's
// pxb-cxl takes 32 devices on its bus; fewer keeps the guest's boot short.
inline constexpr std::size_t kMaxCxlTags = 16;
// The CXL fixed memory window must cover every device's DC region and be a
// multiple of 256 MiB (QEMU's cxl-fmw granularity).
inline constexpr std::uint64_t kCfmwAlign = 256 * kMiB;
// QEMU's DC region block size defaults to 2 MiB: extents and the region's
// size are multiples of it.
inline constexpr std::uint64_t kDcBlock = 2 * kMiB;
// The host bridge's bus number: below it the guest's own PCI devices.
inline constexpr unsigned kCxlBusNr = 12;

struct CxlGuestSpec {
    std::string mount_point = "/run/tagmem";
    std::uint64_t ram_size = kGiB; // -m, guest RAM (no NUMA layout needed)
    // Where the tags' CDAT files are (<dir>/<tag>.cdat, written by the CLI),
    // empty for none.
    std::string cdat_dir;
};

struct CxlTag {
    std::string tag; // canonical lower case
    std::string name;
    bool shareable = false;
    std::uint64_t size = 0;
    unsigned index = 0;    // 0.. in the order asked
    std::string device_id; // the cxl-type3 device's id: cxl_device_id(tag)
    std::string backend_id;
    std::string port_id;
    std::string mem_path;  // <mount point>/<tag>/data
    std::string cdat_path; // the device's cdat= file, empty for QEMU's own
    nlohmann::json host;   // device, numa_node, source, performance
    nlohmann::json access;
};

struct CxlPlan {
    CxlGuestSpec guest;
    std::uint64_t window = 0; // cxl-fmw.0.size
    std::vector<CxlTag> tags;
    std::vector<std::string> warnings;
};

struct CxlPlanResult {
    std::optional<CxlPlan> plan;
    std::vector<Refused> refused;
};

// The device id QEMU knows a tag's device by: derived from the tag, so that
// vm-attach finds the device of a tag declared at boot without being told.
std::string cxl_device_id(const std::string& tag);
// Its QOM path, what the DC commands take.
std::string cxl_device_path(const std::string& device_id);

CxlPlanResult plan_cxl(const nlohmann::json& tags, const std::vector<Uuid>& wanted,
                       const CxlGuestSpec& guest);

// The fw_cfg item: {"format":"tagmem-handoff","version":1,"tags":[],
// "cxl":{"make_dc_regions":true,"tags":[{tag,name,shareable,size,device,
// serial,region,host}]}}.
std::string cxl_handoff_json(const CxlPlan& plan);
std::vector<std::string> cxl_qemu_args(const CxlPlan& plan);
nlohmann::json cxl_plan_json(const CxlPlan& plan);
// The device's serial number (sn=): the guest's memdev shows it as
// `serial`, so the guest can tell which memdev is which tag's.
std::uint64_t cxl_serial(const CxlTag& t);

// The device's CDAT (Coherent Device Attribute Table, as QEMU's cxl-type3
// takes it from its cdat= file and serves it to the guest over DOE): one
// DSMAS for the DC region (DPA 0, the tag's size; dynamic capacity, and
// shareable when the tag is), a DSLBIS for each latency and bandwidth the
// host knows for the tag, a DSEMTS. This is where a CXL device states its
// performance to the guest kernel. nullopt when the host knows no figure
// (QEMU's built-in table then stands).
std::optional<std::string> cdat_table(const CxlTag& t);

// CXL poison is listed and injected in 64-byte units.
inline constexpr std::uint64_t kPoisonUnit = 64;

// Where QEMU must poison the guest's device for a tag's bad ranges (the
// health event's "bad_ranges": offset and length within the tag's data):
// device physical address = the extent's offset (0) + offset, rounded out
// to 64-byte units, clipped to the tag's size; malformed ranges skipped.
// (start, length) pairs in the order given, each once.
std::vector<std::pair<std::uint64_t, std::uint64_t>> poison_ranges(const nlohmann::json& bad_ranges,
                                                                   std::uint64_t tag_size);

// QMP commands (one JSON object each, {"execute":..., "arguments":...}).
nlohmann::json qmp_add_capacity(const std::string& device_id, const std::string& tag,
                                std::uint64_t size);
nlohmann::json qmp_release_capacity(const std::string& device_id, const std::string& tag,
                                    std::uint64_t size);
nlohmann::json qmp_qom_get(const std::string& path, const std::string& property);
nlohmann::json qmp_inject_poison(const std::string& device_id, std::uint64_t dpa,
                                 std::uint64_t length);

} // namespace tagmem::vm
