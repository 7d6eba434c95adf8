// SPDX-License-Identifier: Apache-2.0
#include "mount.hpp"

#include "log.hpp"

#include <fmt/format.h>

#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

namespace tagmem {
namespace {

constexpr const char* kRequired = "fsname=tagmem,subtype=tagmem,ro,dev,nosuid,allow_other,"
                                  "default_permissions";

// Options a user may add; everything else is refused rather than guessed at.
const std::set<std::string, std::less<>> kAllowedExtra = {"noexec",   "noatime", "nodiratime",
                                                          "relatime", "sync",    "async"};

} // namespace

std::optional<MountInfo> find_mount(const std::string& mount_point) {
    std::ifstream in("/proc/self/mountinfo");
    std::ostringstream text;
    text << in.rdbuf();
    return find_mount_in(text.str(), mount_point);
}

Result<std::string> mount_options(const std::vector<std::string>& extra) {
    std::string opts = kRequired;
    for (const auto& group : extra) {
        for (const auto& o : split_options(group)) {
            if (!kAllowedExtra.contains(o))
                return make_error(EINVAL, fmt::format("mount option '{}' is not allowed: tagmemfs "
                                                      "always mounts with {} and accepts only {}",
                                                      o, kRequired,
                                                      "noexec, noatime, nodiratime, relatime, "
                                                      "sync, async"));
            opts += "," + o;
        }
    }
    return opts;
}

Status recover_mount_point(const std::string& mount_point, StaleMount stale) {
    // statfs() first: on a dead FUSE mount, stat() of the root can still be
    // answered from the kernel's attribute cache, statfs() never is.
    struct statfs sfs {};
    struct stat st {};
    int err = 0;
    if (::statfs(mount_point.c_str(), &sfs) != 0 && errno == ENOTCONN)
        err = ENOTCONN;
    else if (::stat(mount_point.c_str(), &st) != 0)
        err = errno;
    if (err == ENOTCONN && stale == StaleMount::keep) {
        log::warning("{}: stale mount of a daemon that died (ENOTCONN); replacing it after the "
                     "first scan",
                     mount_point);
        return Ok{};
    }
    if (err == ENOTCONN) {
        log::warning("{}: stale mount of a daemon that died (ENOTCONN); detaching it", mount_point);
        if (::umount2(mount_point.c_str(), MNT_DETACH) != 0)
            return make_error(errno, fmt::format("cannot detach the stale mount at {}: {}",
                                                 mount_point, std::strerror(errno)));
        return recover_mount_point(mount_point, stale);
    }
    if (err == 0) {
        auto mi = find_mount(mount_point);
        if (mi && mi->fstype == "fuse.tagmem")
            return make_error(EBUSY,
                              fmt::format("{} is already a live tagmemfs mount", mount_point));
        if (!S_ISDIR(st.st_mode))
            return make_error(ENOTDIR, fmt::format("{} is not a directory", mount_point));
        return Ok{};
    }
    if (err == ENOENT) {
        if (::mkdir(mount_point.c_str(), 0755) != 0 && errno != EEXIST)
            return make_error(
                errno, fmt::format("cannot create {}: {}", mount_point, std::strerror(errno)));
        return Ok{};
    }
    return make_error(err, fmt::format("{}: {}", mount_point, std::strerror(err)));
}

Status verify_mounted_options(const std::string& mount_point) {
    auto mi = find_mount(mount_point);
    if (!mi || mi->fstype != "fuse.tagmem")
        return make_error(EIO, fmt::format("{} does not show up as a tagmemfs mount in "
                                           "/proc/self/mountinfo",
                                           mount_point));
    std::vector<std::string> missing;
    if (mi->mount_opts.contains("nodev"))
        missing.emplace_back("dev (the kernel applied nodev, e.g. inside a user namespace)");
    if (!mi->mount_opts.contains("nosuid"))
        missing.emplace_back("nosuid");
    if (!mi->super_opts.contains("default_permissions"))
        missing.emplace_back("default_permissions");
    if (!mi->super_opts.contains("allow_other"))
        missing.emplace_back("allow_other");
    if (!missing.empty()) {
        std::string list;
        for (const auto& m : missing)
            list += (list.empty() ? "" : ", ") + m;
        return make_error(EPERM, fmt::format("{} was mounted without {}; refusing to serve it",
                                             mount_point, list));
    }
    return Ok{};
}

Result<FuseMount> FuseMount::mount(const std::string& mount_point, const std::string& options,
                                   FsContext* context) {
    std::vector<std::string> argv_storage = {"tagmemfs", "-o", options};
    std::vector<char*> argv;
    for (auto& a : argv_storage)
        argv.push_back(a.data());
    fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
    fuse_session* se =
        fuse_session_new(&args, &tagmem_fuse_ops(), sizeof(fuse_lowlevel_ops), context);
    // Parsing the options may have made libfuse copy the arguments (args is
    // then "allocated"); the copy is ours to free, the session keeps none of it.
    fuse_opt_free_args(&args);
    if (!se)
        return make_error(EINVAL,
                          fmt::format("cannot create a FUSE session with options {}", options));
    if (fuse_session_mount(se, mount_point.c_str()) != 0) {
        fuse_session_destroy(se);
        return make_error(EIO, fmt::format("cannot mount on {} (is /dev/fuse there, and are "
                                           "you root?)",
                                           mount_point));
    }
    FuseMount m(se, mount_point);
    if (auto ok = verify_mounted_options(mount_point); !ok)
        return ok.error(); // m's destructor unmounts
    return m;
}

FuseMount::FuseMount(FuseMount&& other) noexcept
    : se_(std::exchange(other.se_, nullptr)), mount_point_(std::move(other.mount_point_)) {}

FuseMount::~FuseMount() {
    if (!se_)
        return;
    fuse_session_unmount(se_);
    fuse_session_destroy(se_);
}

} // namespace tagmem
