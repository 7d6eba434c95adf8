// SPDX-License-Identifier: Apache-2.0
// Every read tagmem makes of the host (sysfs attributes, links, /dev nodes,
// /proc/devices, the user database) goes through HostOs. Production uses
// real_host_os(); unit tests substitute an in-memory host. libdaxctl reads
// /sys and /dev itself, which is why the synthetic-host tests mount fake
// trees over those paths instead of faking this interface.
#pragma once

#include "device.hpp"
#include "fd.hpp"
#include "result.hpp"
#include "sysfs_value.hpp"

#include <fmt/format.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tagmem {

enum class NodeType { char_device, block_device, symlink, directory, regular, other };

// How tagmem takes a failed read of the host; the one place that decides.
//
// Gone: the object read no longer exists, or never was what was asked for
// (ENOENT, ENOTDIR: a path component vanished; ENODEV, ENXIO: the device
// behind it went away). Only these, and the verdicts of tagmem's own
// checks (a malformed or inconsistent attribute: EINVAL, ERANGE, EFBIG,
// EEXIST, ENODEV from verify_device_node; a directory or a symlink where an
// attribute belongs: EISDIR, ELOOP), may remove or change a tag.
//
// Anything else (EMFILE, ENFILE, ENOMEM, EIO, EAGAIN, EINTR, EACCES,
// EPERM, EBUSY, ENOBUFS, ...) says nothing about the device: a hostile user
// holding the daemon at its fd limit must not make every tag vanish. Such a
// failure keeps the last known state and is retried.
bool is_gone(int err);
bool is_transient(int err);

struct NodeInfo {
    NodeType type = NodeType::other;
    DevNumber rdev;          // for device nodes
    std::uint64_t nlink = 0; // a sysfs directory's is 2 + its subdirectories; 0: unknown
};

class HostOs {
  public:
    virtual ~HostOs() = default;

    // The error read_file_bounded() returns for a file over its bound.
    static Error too_large(const std::string& path, std::size_t max_bytes) {
        return make_error(EFBIG, fmt::format("{}: larger than {} bytes, the most it may have; "
                                             "not read",
                                             path, max_bytes));
    }

    // Reads a small file (sysfs attribute) whole. ENOENT when it is absent.
    // EFBIG past 64 KiB: no attribute is larger.
    virtual Result<std::string> read_file(const std::string& path) = 0;
    // Reads a file whole that may be far larger than an attribute (a
    // configuration file), up to max_bytes: EFBIG, saying the bound,
    // beyond. The default, for hosts whose read_file() has no bound of its
    // own (the in-memory ones), applies the bound to read_file().
    virtual Result<std::string> read_file_bounded(const std::string& path, std::size_t max_bytes) {
        auto text = read_file(path);
        if (text && text->size() > max_bytes)
            return too_large(path, max_bytes);
        return text;
    }
    virtual Result<std::string> real_path(const std::string& path) = 0;
    // Where a symlink points, as an absolute path: the link's target joined
    // to the link's directory, "." and ".." folded. Only as exact as that
    // directory: pass links in canonical directories (sysfs device
    // directories are). One readlink instead of realpath's one per path
    // component, which dominates a scan of thousands of devices.
    virtual Result<std::string> link_target(const std::string& path) { return real_path(path); }
    // Entry names of a directory, without "." and "..", in no set order.
    virtual Result<std::vector<std::string>> list_dir(const std::string& path) = 0;
    // Names with their inode numbers (readdir's d_ino, free to get): a
    // sysfs object re-created under an old name has a new inode. The
    // default, for hosts that cannot tell, reports 0 for all.
    virtual Result<std::vector<std::pair<std::string, std::uint64_t>>>
    list_dir_inodes(const std::string& path) {
        auto names = list_dir(path);
        if (!names)
            return names.error();
        std::vector<std::pair<std::string, std::uint64_t>> out;
        for (auto& n : *names)
            out.emplace_back(std::move(n), 0);
        return out;
    }
    // lstat(): a symlink is reported as a symlink, never followed.
    virtual Result<NodeInfo> lstat_node(const std::string& path) = 0;
    // stat(): links followed, /proc's fd and map_files links included (to
    // the file they hold, even one deleted). The default resolves the path
    // first, for hosts whose links are ordinary.
    virtual Result<NodeInfo> stat_node(const std::string& path) {
        auto real = real_path(path);
        if (!real)
            return real.error();
        return lstat_node(*real);
    }
    // statx(AT_STATX_DONT_SYNC) following links: what the kernel has
    // cached of the file, without a round trip to the filesystem that holds
    // it. For the files other processes hold (/proc/<pid>/fd, map_files):
    // a FUSE server there must neither be able to hang the caller (a
    // GETATTR never answered) nor be asked anything (issue 19). A char
    // device's rdev is the inode's, fixed when it was made. The default,
    // for hosts without that distinction, is stat_node().
    virtual Result<NodeInfo> stat_cached(const std::string& path) { return stat_node(path); }
    // readlink(2): the link's text as it is (a /proc link is answered by
    // the kernel, e.g. "pid:[4026531836]" for /proc/self/ns/pid).
    virtual Result<std::string> read_link(const std::string& path) {
        return make_error(ENOTSUP, fmt::format("cannot read link {} here", path));
    }
    virtual bool exists(const std::string& path) = 0;
    // The character major the running kernel registered for "dax"; nullopt
    // when none is, an error when /proc/devices cannot be read.
    virtual Result<std::optional<unsigned>> dax_char_major() = 0;
    // The dax devices libdaxctl enumerates, with the facts it reads of them
    // (daxctl_scan.cpp). libdaxctl reads /sys itself and drops, without a
    // word, a device it fails to read: the list may be short, never wrong.
    virtual Result<std::vector<DaxDevice>> daxctl_devices() = 0;
    // Binds a disabled dax device to device_dax, as `daxctl enable-device`
    // does (libdaxctl's daxctl_dev_enable_devdax). Never onlines memory.
    // Called only for a device a VM hand-off names (core/handoff.hpp): the
    // host's hand-off is the opt-in. A host that cannot do it says so.
    virtual Status enable_devdax(const std::string& name) {
        return make_error(ENOTSUP, fmt::format("cannot enable {} as devdax here", name));
    }

    // Writes made only for CXL poison (docs/health.md): a memdev's
    // trigger_poison_list and tagmemfs's own tracefs instance. Never a
    // write that changes memory or a device's configuration.
    // write(2) of text to an existing file (no O_CREAT, O_TRUNC).
    virtual Status write_file(const std::string& path, std::string_view text) {
        return make_error(ENOTSUP,
                          fmt::format("cannot write {} here ({} bytes)", path, text.size()));
    }
    // mkdir(2), mode 0700; EEXIST when it is there.
    virtual Status make_dir(const std::string& path) {
        return make_error(ENOTSUP, fmt::format("cannot make {} here", path));
    }
    // rmdir(2).
    virtual Status remove_dir(const std::string& path) {
        return make_error(ENOTSUP, fmt::format("cannot remove {} here", path));
    }
    // open(2) O_RDONLY | O_NONBLOCK | O_CLOEXEC, for a descriptor to poll
    // (tracefs's trace_pipe).
    virtual Result<Fd> open_nonblocking(const std::string& path) {
        return make_error(ENOTSUP, fmt::format("cannot open {} here", path));
    }

    // A number is taken as parse_account_id() takes it (0..4294967294, no
    // sign or leading zero); a name must pass check_account_name(). ENOENT
    // for an unknown name, never a wrapped or default id.
    virtual Result<uid_t> user_id(const std::string& name_or_number) = 0;
    virtual Result<gid_t> group_id(const std::string& name_or_number) = 0;
};

HostOs& real_host_os();

} // namespace tagmem
