// SPDX-License-Identifier: Apache-2.0
// Who uses a dax device: the scan of /proc for find_device_users() (see
// online.hpp and docs/online.md, "Who uses the device"). Apart from
// online.cpp because every line here reads what other, possibly hostile,
// processes hold, and must neither be fooled nor hung by it.
#include "online.hpp"

#include "host_os.hpp"

#include <fcntl.h>
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>

namespace tagmem {
namespace {

// /proc/<pid> entries are numbers; everything else there is not a process.
bool is_pid(const std::string& name) {
    return !name.empty() && name.find_first_not_of("0123456789") == std::string::npos;
}

// A process or descriptor that vanished while we looked was no user.
bool vanished(const Error& e) {
    return e.code == ENOENT || e.code == ESRCH;
}

Result<std::uint64_t> parse_hex(std::string_view text) {
    std::uint64_t v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v, 16);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size())
        return make_error(EINVAL, fmt::format("not a hexadecimal number: '{}'", text));
    return v;
}

// The init PID namespace's inode number (PROC_PID_INIT_INO, fixed in the
// kernel's ABI since 3.8). Compared with our own, not with /proc/1's: when
// /proc was mounted for a child namespace, its pid 1 is that namespace's
// init, and the two would agree.
constexpr const char* kInitPidNamespace = "pid:[4026531836]";

Status in_init_pid_namespace(HostOs& os) {
    auto ns = os.read_link("/proc/self/ns/pid");
    if (!ns)
        return make_error(
            kOtherPidNamespace,
            fmt::format("cannot tell which PID namespace tagmem runs in: {}", ns.error().message));
    if (*ns != kInitPidNamespace)
        return make_error(kOtherPidNamespace,
                          fmt::format("tagmem runs in a PID namespace other than the host's ({}, "
                                      "not {}): its /proc does not show every process that may "
                                      "use the device. Run it in the host's PID namespace",
                                      *ns, kInitPidNamespace));
    return Ok{};
}

// Whether the descriptor whose /proc/<pid>/fdinfo/<n> is at path was opened
// O_PATH ("flags:" is octal, the open flags). The kernel writes fdinfo
// itself; the file's filesystem is not asked.
Result<bool> opened_path_only(HostOs& os, const std::string& path) {
    auto text = os.read_file(path);
    if (!text)
        return text.error();
    std::string_view rest = *text;
    while (!rest.empty()) {
        auto nl = rest.find('\n');
        std::string_view line = rest.substr(0, nl);
        rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
        if (!line.starts_with("flags:"))
            continue;
        line = trim_attr(line.substr(6));
        unsigned long flags = 0;
        auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), flags, 8);
        if (line.empty() || ec != std::errc() || end != line.data() + line.size())
            break;
        return (flags & O_PATH) != 0;
    }
    return make_error(EINVAL, fmt::format("{}: no open flags in it", path));
}

// The value of "key:" in fdinfo text; empty when absent.
std::string_view fdinfo_field(std::string_view text, std::string_view key) {
    while (!text.empty()) {
        auto nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        if (line.starts_with(key) && line.size() > key.size() && line[key.size()] == ':')
            return trim_attr(line.substr(key.size() + 1));
    }
    return {};
}

// Whether every mount in /proc/<pid>/mountinfo that matches (by mount id,
// field 1, or by device, field 3) has the per-mount option nodev. A char
// device cannot be opened (nor mapped) through a nodev mount: a file there
// is not the device, whatever its filesystem would say. False when none
// matches.
Result<bool> on_nodev_mount(HostOs& os, const std::string& dir, std::string_view mount_id,
                            std::string_view dev) {
    auto text = os.read_file(dir + "/mountinfo");
    if (!text)
        return text.error();
    bool any = false;
    std::string_view rest = *text;
    while (!rest.empty()) {
        auto nl = rest.find('\n');
        std::string_view line = rest.substr(0, nl);
        rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
        std::vector<std::string_view> f;
        while (!line.empty() && f.size() < 6) {
            auto sp = line.find(' ');
            f.push_back(line.substr(0, sp));
            line.remove_prefix(sp == std::string_view::npos ? line.size() : sp + 1);
        }
        if (f.size() < 6 || (!mount_id.empty() && f[0] != mount_id) ||
            (!dev.empty() && f[2] != dev))
            continue;
        any = true;
        const std::string options = "," + std::string(f[5]) + ",";
        if (options.find(",nodev,") == std::string::npos)
            return false;
    }
    return any;
}

// The device (major:minor, as mountinfo writes it) of the file mapped at
// range ("start-end", as map_files names it), from /proc/<pid>/maps.
Result<std::string> mapped_file_dev(HostOs& os, const std::string& dir, const std::string& range) {
    auto text = os.read_file(dir + "/maps");
    if (!text)
        return text.error();
    auto dash = range.find('-');
    auto lo = parse_hex(range.substr(0, dash));
    auto hi = parse_hex(dash == std::string::npos ? "" : range.substr(dash + 1));
    std::string_view rest = *text;
    while (lo && hi && !rest.empty()) {
        auto nl = rest.find('\n');
        std::string_view line = rest.substr(0, nl);
        rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
        // start-end perms offset major:minor inode path
        std::vector<std::string_view> f;
        while (!line.empty() && f.size() < 4) {
            auto sp = line.find(' ');
            f.push_back(line.substr(0, sp));
            line.remove_prefix(sp == std::string_view::npos ? line.size() : sp + 1);
        }
        if (f.size() < 4)
            continue;
        auto d = f[0].find('-');
        auto a = parse_hex(f[0].substr(0, d));
        auto b = parse_hex(d == std::string_view::npos ? "" : f[0].substr(d + 1));
        if (a && b && *a == *lo && *b == *hi) {
            // maps writes hexadecimal major:minor; mountinfo decimal.
            auto colon = f[3].find(':');
            auto major = parse_hex(f[3].substr(0, colon));
            auto minor = parse_hex(colon == std::string_view::npos ? "" : f[3].substr(colon + 1));
            if (major && minor)
                return fmt::format("{}:{}", *major, *minor);
        }
    }
    return make_error(ENOENT, fmt::format("{}/maps: no mapping {}", dir, range));
}

} // namespace

Result<std::vector<DeviceUser>> find_device_users(DevNumber rdev, HostOs& os,
                                                  std::chrono::steady_clock::time_point deadline) {
    if (auto ns = in_init_pid_namespace(os); !ns)
        return ns.error();
    auto pids = os.list_dir("/proc");
    if (!pids)
        return pids.error();
    std::vector<DeviceUser> users;
    auto command_of = [&](const std::string& pid) {
        auto comm = os.read_file("/proc/" + pid + "/comm");
        return comm ? std::string(trim_attr(*comm)) : std::string();
    };
    std::sort(pids->begin(), pids->end(), [](const std::string& a, const std::string& b) {
        return a.size() != b.size() ? a.size() < b.size() : a < b;
    });
    for (const auto& pid : *pids) {
        if (!is_pid(pid))
            continue;
        const std::string dir = "/proc/" + pid;
        auto found = [&](std::string how) {
            users.push_back({std::stoi(pid), command_of(pid), std::move(how)});
        };
        // Whether the descriptor or mapping at dir/sub/entry holds the
        // device: what the kernel has cached of the file it leads to (no
        // question to its filesystem), and for a descriptor, not O_PATH.
        auto holds = [&](const char* sub, const std::string& entry) -> Result<bool> {
            const bool is_fd = std::string_view(sub) == "fd";
            auto node = os.stat_cached(dir + "/" + sub + "/" + entry);
            if (!node && node.error().code == EACCES) {
                // A FUSE filesystem without allow_other answers no one but
                // its owner, root included. On a nodev mount (every user's
                // FUSE mount is) the file is not the device: no need to ask.
                std::string mount_id, dev;
                if (is_fd) {
                    auto info = os.read_file(dir + "/fdinfo/" + entry);
                    if (!info)
                        return info.error();
                    mount_id = fdinfo_field(*info, "mnt_id");
                } else {
                    auto d = mapped_file_dev(os, dir, entry);
                    if (!d)
                        return d.error();
                    dev = *d;
                }
                auto nodev = mount_id.empty() && dev.empty()
                                 ? Result<bool>(false)
                                 : on_nodev_mount(os, dir, mount_id, dev);
                if (!nodev)
                    return nodev.error();
                if (*nodev)
                    return false;
                return node.error();
            }
            if (!node)
                return node.error();
            if (node->type != NodeType::char_device || node->rdev != rdev)
                return false;
            if (!is_fd)
                return true; // a mapping is of a file that was opened
            auto path_only = opened_path_only(os, dir + "/fdinfo/" + entry);
            if (!path_only)
                return path_only.error();
            return !*path_only;
        };
        // The links in dir/sub that lead to the device. False: the process
        // ended while being looked at, which is no user.
        auto scan = [&](const char* sub, const char* verb, const char* label) -> Result<bool> {
            auto entries = os.list_dir(dir + "/" + sub);
            if (!entries) {
                if (vanished(entries.error()))
                    return false;
                return entries.error();
            }
            for (const auto& entry : *entries) {
                if (std::chrono::steady_clock::now() > deadline)
                    return make_error(ETIMEDOUT, fmt::format("looking at every process took too "
                                                             "long (stopped at pid {})",
                                                             pid));
                auto hit = holds(sub, entry);
                if (!hit) {
                    if (vanished(hit.error()))
                        continue;
                    return make_error(hit.error().code,
                                      fmt::format("cannot tell whether pid {} {} the device: {}",
                                                  pid, verb, hit.error().message));
                }
                if (*hit)
                    found(fmt::format("{} {}", label, entry));
            }
            return true;
        };
        // Open descriptors.
        auto alive = scan("fd", "uses", "fd");
        if (!alive)
            return alive.error();
        if (!*alive)
            continue;
        // Mappings outlive the descriptor they were made through.
        // map_files lists the file mappings, named start-end; following
        // one takes CAP_SYS_ADMIN (tagmem online runs as root).
        if (auto mapped = scan("map_files", "maps", "mapping"); !mapped)
            return mapped.error();
    }
    return users;
}

Result<std::vector<DeviceUser>> find_device_users_within(DevNumber rdev, HostOs& os,
                                                         std::chrono::milliseconds timeout) {
    // Shared with the thread, which may outlive this call.
    struct Outcome {
        std::mutex mutex;
        std::condition_variable done;
        std::optional<Result<std::vector<DeviceUser>>> result;
    };
    auto outcome = std::make_shared<Outcome>();
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    try {
        std::thread([outcome, rdev, &os, deadline] {
            auto r = find_device_users(rdev, os, deadline);
            std::lock_guard lock(outcome->mutex);
            outcome->result.emplace(std::move(r));
            outcome->done.notify_all();
        }).detach();
    } catch (const std::system_error& e) { // no thread: EAGAIN, out of memory
        return make_error(e.code().value(),
                          fmt::format("cannot start looking at /proc: {}", e.what()));
    }
    std::unique_lock lock(outcome->mutex);
    if (!outcome->done.wait_until(lock, deadline, [&] { return outcome->result.has_value(); }))
        return make_error(ETIMEDOUT,
                          fmt::format("looking at every process's descriptors and mappings did "
                                      "not finish within {} ms (a read of /proc blocked)",
                                      timeout.count()));
    return std::move(*outcome->result);
}

} // namespace tagmem
