// SPDX-License-Identifier: Apache-2.0
// An in-memory tagmem::HostOs for unit tests: regular files, directories,
// symlinks (relative or absolute, resolved like the kernel resolves them),
// device nodes, the dax major and a user/group table. Failures can be
// injected per path, and per kind of call under a path (the way EMFILE
// fails every open() but no lstat()).
//
// The add_*_device() helpers build one consistent dax device the way
// docs/sysfs-layout.md describes it (device directory and its attributes,
// /sys/bus/dax/devices link, /sys/dev/char/M:m link, subsystem and driver
// links, /dev node of the dax major) and return the DaxDevice that libdaxctl
// would report for it. Tests then break exactly one thing.
#pragma once

#include "device.hpp"
#include "host_os.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace tagmem::fake {

inline constexpr unsigned kDaxMajor = 252;

// The facts of one device; the defaults describe a healthy devdax device.
// Setters chain: DaxSpec{}.at(2, 1).nodes(3, 0).minor_number(7).
struct DaxSpec {
    int region = 0;
    int id = 0;
    std::optional<unsigned> minor; // default: the next free minor
    std::uint64_t size = 1ull << 30;
    std::uint64_t align = 2ull << 20;
    std::uint64_t resource = 0x1040000000;
    int target_node = 1;
    int numa_node = 0;
    DevMode mode = DevMode::devdax;
    bool with_mapping = true; // write mapping0/{start,end,page_offset}

    DaxSpec& at(int region_id, int dev_id) {
        region = region_id;
        id = dev_id;
        return *this;
    }
    DaxSpec& minor_number(unsigned m) {
        minor = m;
        return *this;
    }
    DaxSpec& nodes(int target, int numa) {
        target_node = target;
        numa_node = numa;
        return *this;
    }
    DaxSpec& in_mode(DevMode m) {
        mode = m;
        return *this;
    }
    DaxSpec& range(std::uint64_t start, std::uint64_t bytes) {
        resource = start;
        size = bytes;
        return *this;
    }
};

// Kinds of call, for FakeHostOs::fail_calls (a mask).
enum Op : unsigned {
    op_read = 1,    // read_file
    op_list = 2,    // list_dir, list_dir_inodes
    op_stat = 4,    // lstat_node, exists
    op_resolve = 8, // real_path, link_target
    op_lookup = 16, // user_id, group_id
    op_major = 32,  // dax_char_major (/proc/devices)
    op_daxctl = 64, // daxctl_devices: libdaxctl cannot start
    op_write = 128, // write_file
    op_open = op_read | op_list | op_major | op_lookup | op_write, // what EMFILE fails
};

class FakeHostOs : public HostOs {
  public:
    FakeHostOs();

    // --- building the host ---------------------------------------------
    // Paths are absolute; missing parent directories are created.
    void add_file(const std::string& path, std::string content);
    void add_dir(const std::string& path);
    // target as the link holds it: relative to the link's directory, or absolute.
    void add_symlink(const std::string& path, std::string target);
    // A symlink whose target is written relative to the link, like sysfs links.
    void add_relative_symlink(const std::string& path, const std::string& absolute_target);
    void add_node(const std::string& path, NodeType type, DevNumber rdev = {});
    void add_char_device(const std::string& path, unsigned major, unsigned minor) {
        add_node(path, NodeType::char_device, {major, minor});
    }
    // Removes whatever is at path (and, for a directory, everything below).
    void remove(const std::string& path);
    // Every operation on path (as given or once resolved) fails with err.
    void fail(const std::string& path, int err) { failures_[path] = err; }
    // Every call of these kinds (Op mask) on a path under prefix fails.
    void fail_calls(unsigned ops, int err, const std::string& prefix = "/") {
        call_failures_.push_back({ops, err, prefix});
    }
    // Every injected failure ends.
    void heal() {
        failures_.clear();
        call_failures_.clear();
        daxctl_drops_.clear();
    }
    // libdaxctl leaves this device out of its list without a word, as it
    // does a device it fails to read.
    void daxctl_drops(const std::string& name) { daxctl_drops_.insert(name); }

    void set_dax_major(std::optional<unsigned> major) { dax_major_ = major; }
    void add_user(const std::string& name, uid_t uid) { users_[name] = uid; }
    void add_group(const std::string& name, gid_t gid) { groups_[name] = gid; }

    // --- whole devices (docs/sysfs-layout.md) ----------------------------
    // hmem / soft-reserved memory: /sys/devices/platform/hmem.R/daxR.N.
    DaxDevice add_hmem_device(const DaxSpec& spec = {});
    // CXL DC region R: .../regionR/dax_regionR/daxR.N with `uuid` holding
    // uuid_attr (a newline is appended, as the kernel does).
    DaxDevice add_dcd_device(const DaxSpec& spec, const std::string& uuid_attr);
    // extentR.E in the device's region; no uuid file when uuid is nullopt.
    void add_dcd_extent(const DaxDevice& dev, int extent, std::uint64_t offset,
                        std::uint64_t length, const std::optional<std::string>& uuid);
    // NVDIMM: .../ndbusB/regionR/namespaceR.J, nd_dax daxR.J holding daxR.N.
    // Attribute texts are written with a trailing newline.
    DaxDevice add_nvdimm_device(const DaxSpec& spec, const std::string& namespace_uuid,
                                const std::string& infoblock_uuid, int namespace_id = 0);
    // HMAT access0 initiators attributes of a node; absent values are not written.
    void set_node_performance(int node, const Performance& perf);

    // Where a device's pieces live, for tests that break one of them.
    static std::string dev_char_link(const DaxDevice& dev);

    // --- HostOs ----------------------------------------------------------
    Result<std::string> read_file(const std::string& path) override;
    Result<std::string> real_path(const std::string& path) override;
    Result<std::vector<std::string>> list_dir(const std::string& path) override;
    Result<NodeInfo> lstat_node(const std::string& path) override;
    // stat(): links followed; every path asked for is kept (stats()).
    Result<NodeInfo> stat_node(const std::string& path) override;
    // As stat_node(), but kept apart (cached_stats()), and after
    // on_stat_cached(path) has run outside the host's lock: a test makes it
    // block, as a FUSE server that never answers would make a stat().
    Result<NodeInfo> stat_cached(const std::string& path) override;
    void on_stat_cached(std::function<void(const std::string&)> hook) {
        stat_cached_hook_ = std::move(hook);
    }
    // The symlink's text as add_symlink() stored it.
    Result<std::string> read_link(const std::string& path) override;
    const std::vector<std::string>& stats() const { return stats_; }
    const std::vector<std::string>& cached_stats() const { return cached_stats_; }
    bool exists(const std::string& path) override;
    Result<std::optional<unsigned>> dax_char_major() override;
    // As libdaxctl: the bus's devices read by read_dax_device, those that
    // fail to read left out silently.
    Result<std::vector<DaxDevice>> daxctl_devices() override;
    Result<std::string> link_target(const std::string& path) override;
    // As libdaxctl: binds the device to device_dax (its driver link), or
    // fails with the error set by fail_enable().
    Status enable_devdax(const std::string& name) override;
    void fail_enable(int err) { enable_error_ = err; }
    // Every device enable_devdax() was asked for, in order.
    const std::vector<std::string>& enabled() const { return enabled_; }
    // Replaces an existing regular file's content (as write(2) at offset
    // 0 of a sysfs attribute does); ENOENT for a missing one.
    Status write_file(const std::string& path, std::string_view text) override;
    // Every write_file() that succeeded, in order: (path, text).
    const std::vector<std::pair<std::string, std::string>>& writes() const { return writes_; }
    // mkdir(2) and rmdir(2) of an empty directory, failures injected as writes.
    Status make_dir(const std::string& path) override;
    Status remove_dir(const std::string& path) override;
    Result<uid_t> user_id(const std::string& name_or_number) override;
    Result<gid_t> group_id(const std::string& name_or_number) override;

    // Every path read_file() was asked for, in order.
    const std::vector<std::string>& reads() const { return reads_; }
    // How often list_dir() was asked for path (as given).
    int list_count(const std::string& path) const {
        auto it = list_counts_.find(path);
        return it == list_counts_.end() ? 0 : it->second;
    }

  private:
    // Resolves symlinks in every component, the last one only when
    // follow_last. Fails with ENOENT/ENOTDIR/ELOOP like the kernel.
    Result<std::string> resolve(const std::string& path, bool follow_last) const;
    std::optional<int> injected(Op op, const std::string& given, const std::string& resolved) const;
    bool is_dir(const std::string& path) const { return dirs_.contains(path); }
    DaxDevice add_device_at(const std::string& region_dir, const DaxSpec& spec);

    // A full rescan reads on two threads (HostState's read-ahead).
    mutable std::recursive_mutex mutex_;
    std::map<std::string, std::string> files_;
    std::set<std::string> dirs_;
    std::map<std::string, std::string> links_;
    std::map<std::string, NodeInfo> nodes_;
    std::map<std::string, int> failures_;
    struct CallFailure {
        unsigned ops;
        int err;
        std::string prefix;
    };
    std::vector<CallFailure> call_failures_;
    std::set<std::string> daxctl_drops_;
    std::map<std::string, uid_t> users_;
    std::map<std::string, gid_t> groups_;
    std::optional<unsigned> dax_major_ = kDaxMajor;
    unsigned next_minor_ = 0;
    std::vector<std::string> reads_;
    std::map<std::string, int> list_counts_;
    std::vector<std::string> enabled_;
    std::vector<std::pair<std::string, std::string>> writes_;
    int enable_error_ = 0;
    std::vector<std::string> stats_;
    std::vector<std::string> cached_stats_;
    std::function<void(const std::string&)> stat_cached_hook_;
};

// "/a/b/../c/./d" -> "/a/c/d" (no symlink resolution).
std::string normalize_path(const std::string& path);
// The relative link text that points from a link at link_path to target.
std::string relative_link(const std::string& link_path, const std::string& target);

} // namespace tagmem::fake
