// SPDX-License-Identifier: Apache-2.0
// The opt-in to system RAM: `tagmem online <tag>` gives a tag's devdax
// device to the page allocator through kmem (as `daxctl reconfigure-device
// --mode=system-ram` does) and `tagmem offline <tag>` takes it back. tagmem
// never does either unless tagmem.conf allows it for that tag
// (docs/online.md). Three parts:
//   - decide_memory_change(): what to do, from the scan, the configuration
//     and who uses the device; pure, so every refusal is unit-tested;
//   - find_device_users(): the processes that have the device open or
//     mapped, through any node of its number (/proc, through HostOs);
//   - to_system_ram() / to_devdax(): the kernel operations, through
//     libdaxctl, and memory_blocks() to report what the kernel did.
#pragma once

#include "config.hpp"
#include "result.hpp"
#include "sysfs_value.hpp"
#include "tag_record.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace tagmem {

class HostOs;

enum class MemoryChange : std::uint8_t { online, offline };

// Why a change is refused, one class per exit code of tagmem(1).
enum class Refusal : std::uint8_t {
    none,
    config_invalid, // tagmem.conf has errors: no decision is made on it
    unknown_tag,    // no device carries the tag
    conflict,       // several devices claim it
    not_ready,      // disabled, offered: neither devdax nor system-ram
    not_allowed,    // no opt-in (online = allow; online-shareable = allow when shareable)
    in_use,         // a process has the device open or mapped
};

// A process holding the device: an open descriptor or a mapping.
struct DeviceUser {
    int pid = 0;
    std::string command; // /proc/<pid>/comm, may be empty
    std::string how;     // "fd 3" or "mapping 7f00...-7f00..."
    bool operator==(const DeviceUser&) const = default;
};

struct MemoryDecision {
    // proceed: change record->device(); nothing_to_do: already so; refuse.
    enum class Verdict : std::uint8_t { proceed, nothing_to_do, refuse } verdict;
    Refusal refusal = Refusal::none;
    std::string message; // for people: what, and why
};

// The whole policy. record is the scan's record of the tag (null: unknown);
// users are the device's (find_device_users), only looked at when onlining
// a devdax device. Offline needs the same opt-in as online: tagmem changes
// only what the administrator gave it.
MemoryDecision decide_memory_change(MemoryChange change, const Uuid& tag, const TagRecord* record,
                                    const Config& config, const std::vector<DeviceUser>& users);

// Every process that has a node of number rdev open (/proc/<pid>/fd) or
// mapped (/proc/<pid>/map_files, root only), whatever its path: /dev/daxX.Y,
// tagmemfs's node behind `data`, or a node someone made elsewhere. A process
// that exits during the scan is no user; any other failed read fails the
// whole (the answer must never be "unused" for want of looking).
//
// What a process holds is looked at without asking the filesystem it is on
// (HostOs::stat_cached): a user's FUSE file can neither hang the scan nor,
// held O_PATH (the only way a char node on a nodev mount can be held),
// pass for the device: an O_PATH descriptor cannot read, write or map, and
// opening the file through it is an open(), which fails once device_dax is
// unbound and before that is seen by the second look. The scan gives up
// with ETIMEDOUT at deadline. It refuses with kOtherPidNamespace when run
// outside the init PID namespace, where /proc does not show every process.
inline constexpr int kOtherPidNamespace = EXDEV;
Result<std::vector<DeviceUser>> find_device_users(DevNumber rdev, HostOs& os,
                                                  std::chrono::steady_clock::time_point deadline);

// find_device_users() on a thread of its own, given up (ETIMEDOUT) after
// timeout even when a read of /proc blocks in the kernel: the caller, which
// may have unbound device_dax, can then bind it again. The abandoned thread
// keeps using os, which must outlive it (real_host_os() does).
inline constexpr std::chrono::milliseconds kUserScanTimeout{10000};
Result<std::vector<DeviceUser>> find_device_users_within(DevNumber rdev, HostOs& os,
                                                         std::chrono::milliseconds timeout);

// One memory block of the device's range (/sys/devices/system/memory).
struct MemoryBlock {
    std::string name; // memoryN
    bool online = false;
    int node = -1; // the nodeN link in the block's directory; -1 if none
    bool operator==(const MemoryBlock&) const = default;
};

struct MemoryBlocks {
    std::uint64_t block_size = 0;
    std::vector<MemoryBlock> blocks; // whose start lies in the range, by number
    std::uint64_t online_bytes() const;
    std::string names(bool online) const; // "memory33 memory34"
};

// The blocks whose start lies in [start, start + size), as libdaxctl counts
// a device's. An empty list when the kernel has no memory blocks there.
Result<MemoryBlocks> memory_blocks(std::uint64_t start, std::uint64_t size, HostOs& os);

// Errors of to_system_ram / to_devdax: EADDRINUSE when the device was found
// in use once it could no longer be opened (it is returned to devdax);
// EBUSY when the kernel would not offline memory; others as libdaxctl or
// the kernel gave them. Each message says what state the device was left in.
inline constexpr int kInUseError = EADDRINUSE;

// The kernel operations on one dax device, as libdaxctl makes them (return
// values as libdaxctl's: < 0 is -errno). An interface so that every failure
// path below is unit-tested; production uses libdaxctl (open_dax_driver).
class DaxDriver {
  public:
    virtual ~DaxDriver() = default;
    virtual bool is_system_ram() = 0;  // kmem bound (daxctl_dev_get_memory)
    virtual int disable() = 0;         // unbind the driver
    virtual int enable_devdax() = 0;   // bind device_dax
    virtual int enable_ram() = 0;      // bind kmem (hot-adds the blocks)
    virtual int memory_online() = 0;   // online every block, ZONE_MOVABLE
    virtual int memory_offline() = 0;  // offline every block
    virtual int blocks_online() = 0;   // how many blocks are online
    virtual int blocks() = 0;          // how many blocks the device has
    virtual int movable() = 0;         // 1: all online blocks in ZONE_MOVABLE, 0: not
    virtual std::uint64_t start() = 0; // the device's physical range
    virtual std::uint64_t size() = 0;
    virtual std::string said() = 0; // libdaxctl's own messages, " (libdaxctl: ...)"
};

// libdaxctl's driver for the named device; ENODEV when it does not list it.
Result<std::unique_ptr<DaxDriver>> open_dax_driver(const std::string& name);

// devdax -> system-ram: checks the kernel's auto-online policy, unbinds
// device_dax (from then on nobody can open the device), calls recheck (which
// must fail with kInUseError if someone got in before that; the device is
// then bound to device_dax again), binds kmem and onlines the memory blocks
// to ZONE_MOVABLE, on the device's target node (kmem adds the memory there).
// When onlining fails, or leaves a block outside ZONE_MOVABLE (a udev rule
// or the kernel onlined it first, elsewhere), the change is undone: blocks
// offlined, kmem unbound, device_dax bound; the error says how far that got.
Status to_system_ram(const std::string& device, HostOs& os, const std::function<Status()>& recheck);
Status to_system_ram(DaxDriver& dax, const std::string& device, HostOs& os,
                     const std::function<Status()>& recheck);

// system-ram -> devdax: offlines the blocks, unbinds kmem, binds
// device_dax. When a block cannot be offlined, the device stays system RAM
// (the blocks offlined so far are onlined again) and the error says which
// blocks failed. The kernel retries busy pages until a signal interrupts
// it; the caller should catch SIGINT/SIGTERM (no SA_RESTART) so that an
// interrupted offline returns EINTR here and is undone, rather than killing
// the process half-way.
Status to_devdax(const std::string& device, HostOs& os);
Status to_devdax(DaxDriver& dax, const std::string& device, HostOs& os);

} // namespace tagmem
