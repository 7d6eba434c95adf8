// SPDX-License-Identifier: Apache-2.0
#include "host_os.hpp"

#include "account_text.hpp"
#include "daxctl_scan.hpp"
#include "fd.hpp"

#include <fmt/format.h>

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>

namespace tagmem {

bool is_gone(int err) {
    return err == ENOENT || err == ENOTDIR || err == ENODEV || err == ENXIO;
}

bool is_transient(int err) {
    // The verdicts of tagmem's own parsers and checks are not transient:
    // reading again gives the same answer until the host changes.
    // So are a directory or a symlink where an attribute file belongs.
    return !is_gone(err) && err != EINVAL && err != ERANGE && err != EFBIG && err != EEXIST &&
           err != EISDIR && err != ELOOP;
}

namespace {

Error errno_error(int err, std::string_view what, const std::string& path) {
    return make_error(err, fmt::format("{} {}: {}", what, path, std::strerror(err)));
}

class RealHostOs final : public HostOs {
  public:
    Result<std::string> read_file(const std::string& path) override {
        Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
        if (!fd)
            return errno_error(errno, "cannot open", path);
        std::string out;
        char buf[4096];
        for (;;) {
            ssize_t n = ::read(fd.get(), buf, sizeof buf);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                return errno_error(errno, "cannot read", path);
            }
            if (n == 0)
                break;
            out.append(buf, static_cast<std::size_t>(n));
            // A short read is the end: a sysfs attribute comes whole from one
            // show() of at most a page, and a regular file reads short only
            // at its end. Not asking again saves a third of a scan's reads.
            if (static_cast<std::size_t>(n) < sizeof buf)
                break;
            // sysfs attributes are at most a page; anything larger is not one.
            if (out.size() > 64 * 1024)
                return make_error(EFBIG, fmt::format("{}: larger than a sysfs attribute", path));
        }
        return out;
    }

    Result<std::string> read_file_bounded(const std::string& path, std::size_t max_bytes) override {
        Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
        if (!fd)
            return errno_error(errno, "cannot open", path);
        struct stat st {};
        if (::fstat(fd.get(), &st) != 0)
            return errno_error(errno, "cannot stat", path);
        // Said before a byte is read: a huge file costs nothing.
        if (S_ISREG(st.st_mode) && static_cast<std::uint64_t>(st.st_size) > max_bytes)
            return too_large(path, max_bytes);
        std::string out;
        if (S_ISREG(st.st_mode))
            out.reserve(static_cast<std::size_t>(st.st_size));
        char buf[65536];
        for (;;) {
            ssize_t n = ::read(fd.get(), buf, sizeof buf);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                return errno_error(errno, "cannot read", path);
            }
            if (n == 0)
                return out;
            // The file may grow while it is read, or be no regular file.
            if (out.size() + static_cast<std::size_t>(n) > max_bytes)
                return too_large(path, max_bytes);
            out.append(buf, static_cast<std::size_t>(n));
        }
    }

    Result<std::string> real_path(const std::string& path) override {
        std::unique_ptr<char, decltype(&std::free)> p(::realpath(path.c_str(), nullptr),
                                                      &std::free);
        if (!p)
            return errno_error(errno, "cannot resolve", path);
        return std::string(p.get());
    }

    Result<std::string> link_target(const std::string& path) override {
        char buf[4096];
        ssize_t n = ::readlink(path.c_str(), buf, sizeof buf - 1);
        if (n < 0)
            return errno_error(errno, "cannot read link", path);
        std::string_view target(buf, static_cast<std::size_t>(n));
        std::string joined = target.starts_with('/')
                                 ? std::string(target)
                                 : path.substr(0, path.rfind('/') + 1) + std::string(target);
        // Fold "." and ".." lexically.
        std::vector<std::string_view> parts;
        std::string_view rest = joined;
        while (!rest.empty()) {
            auto slash = rest.find('/');
            auto part = rest.substr(0, slash);
            rest.remove_prefix(slash == std::string_view::npos ? rest.size() : slash + 1);
            if (part.empty() || part == ".")
                continue;
            if (part == "..") {
                if (!parts.empty())
                    parts.pop_back();
                continue;
            }
            parts.push_back(part);
        }
        std::string out;
        for (auto part : parts) {
            out += '/';
            out += part;
        }
        return out.empty() ? std::string("/") : out;
    }

    Result<std::vector<std::pair<std::string, std::uint64_t>>>
    list_dir_inodes(const std::string& path) override {
        struct DirCloser {
            void operator()(DIR* d) const { ::closedir(d); }
        };
        std::unique_ptr<DIR, DirCloser> dir(::opendir(path.c_str()));
        if (!dir)
            return errno_error(errno, "cannot list", path);
        std::vector<std::pair<std::string, std::uint64_t>> out;
        while (auto* de = ::readdir(dir.get())) {
            if (std::strcmp(de->d_name, ".") == 0 || std::strcmp(de->d_name, "..") == 0)
                continue;
            out.emplace_back(de->d_name, de->d_ino);
        }
        return out;
    }

    Result<std::vector<std::string>> list_dir(const std::string& path) override {
        auto entries = list_dir_inodes(path);
        if (!entries)
            return entries.error();
        std::vector<std::string> names;
        names.reserve(entries->size());
        for (auto& e : *entries)
            names.push_back(std::move(e.first));
        return names;
    }

    Result<NodeInfo> lstat_node(const std::string& path) override {
        struct stat st {};
        if (::lstat(path.c_str(), &st) != 0)
            return errno_error(errno, "cannot stat", path);
        return node_info(st);
    }

    Result<NodeInfo> stat_node(const std::string& path) override {
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0)
            return errno_error(errno, "cannot stat", path);
        return node_info(st);
    }

    Result<NodeInfo> stat_cached(const std::string& path) override {
        struct statx stx {};
        if (::statx(AT_FDCWD, path.c_str(), AT_STATX_DONT_SYNC, STATX_TYPE | STATX_MODE, &stx) != 0)
            return errno_error(errno, "cannot stat", path);
        struct stat st {};
        st.st_mode = stx.stx_mode;
        st.st_rdev = ::makedev(stx.stx_rdev_major, stx.stx_rdev_minor);
        st.st_nlink = stx.stx_nlink;
        return node_info(st);
    }

    Result<std::string> read_link(const std::string& path) override {
        char buf[4096];
        ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
        if (n < 0)
            return errno_error(errno, "cannot read link", path);
        return std::string(buf, static_cast<std::size_t>(n));
    }

    static NodeInfo node_info(const struct stat& st) {
        NodeInfo info;
        switch (st.st_mode & S_IFMT) {
        case S_IFCHR: info.type = NodeType::char_device; break;
        case S_IFBLK: info.type = NodeType::block_device; break;
        case S_IFLNK: info.type = NodeType::symlink; break;
        case S_IFDIR: info.type = NodeType::directory; break;
        case S_IFREG: info.type = NodeType::regular; break;
        default: info.type = NodeType::other; break;
        }
        info.rdev = DevNumber{::major(st.st_rdev), ::minor(st.st_rdev)};
        info.nlink = st.st_nlink;
        return info;
    }

    bool exists(const std::string& path) override {
        struct stat st {};
        return ::lstat(path.c_str(), &st) == 0;
    }

    Result<std::optional<unsigned>> dax_char_major() override {
        // /proc/devices lists "Character devices:" then "Block devices:".
        auto text = read_file("/proc/devices");
        if (!text)
            return text.error();
        std::istringstream in(*text);
        std::string line;
        bool in_char = false;
        while (std::getline(in, line)) {
            if (line.starts_with("Character devices"))
                in_char = true;
            else if (line.starts_with("Block devices"))
                in_char = false;
            else if (in_char) {
                std::istringstream fields(line);
                unsigned major = 0;
                std::string name;
                if (fields >> major >> name && name == "dax")
                    return std::optional<unsigned>(major);
            }
        }
        return std::optional<unsigned>();
    }

    Result<std::vector<DaxDevice>> daxctl_devices() override { return daxctl_enumerate(); }
    Status enable_devdax(const std::string& name) override { return daxctl_enable_devdax(name); }

    Status write_file(const std::string& path, std::string_view text) override {
        Fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW));
        if (!fd)
            return errno_error(errno, "cannot open", path);
        for (;;) {
            ssize_t n = ::write(fd.get(), text.data(), text.size());
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                return errno_error(errno, "cannot write", path);
            if (static_cast<std::size_t>(n) != text.size())
                return make_error(EIO, fmt::format("short write to {}", path));
            return Ok{};
        }
    }

    Status make_dir(const std::string& path) override {
        if (::mkdir(path.c_str(), 0700) != 0)
            return errno_error(errno, "cannot make", path);
        return Ok{};
    }

    Status remove_dir(const std::string& path) override {
        if (::rmdir(path.c_str()) != 0)
            return errno_error(errno, "cannot remove", path);
        return Ok{};
    }

    Result<Fd> open_nonblocking(const std::string& path) override {
        Fd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW));
        if (!fd)
            return errno_error(errno, "cannot open", path);
        return fd;
    }

    Result<uid_t> user_id(const std::string& name) override {
        if (is_account_number(name))
            return parse_account_id(name);
        if (auto ok = check_account_name(name); !ok)
            return make_error(
                ok.error().code,
                fmt::format("user '{}': {}", escaped_for_display(name), ok.error().message));
        struct passwd pw {};
        std::vector<char> buf; // pw's strings live here
        auto found = lookup_entry(
            [&](passwd* out, char* space, std::size_t size, passwd** result) {
                return ::getpwnam_r(name.c_str(), out, space, size, result);
            },
            pw, buf, "user", name);
        if (!found)
            return found.error();
        return (*found)->pw_uid;
    }

    Result<gid_t> group_id(const std::string& name) override {
        if (is_account_number(name))
            return parse_account_id(name);
        if (auto ok = check_account_name(name); !ok)
            return make_error(
                ok.error().code,
                fmt::format("group '{}': {}", escaped_for_display(name), ok.error().message));
        struct group gr {};
        std::vector<char> buf; // gr's strings live here
        auto found = lookup_entry(
            [&](group* out, char* space, std::size_t size, group** result) {
                return ::getgrnam_r(name.c_str(), out, space, size, result);
            },
            gr, buf, "group", name);
        if (!found)
            return found.error();
        return (*found)->gr_gid;
    }

  private:
    // getpwnam_r/getgrnam_r need a buffer for the whole entry, and a group
    // of thousands of members outgrows any fixed one (ERANGE): grow it.
    template <typename Entry, typename Lookup>
    static Result<Entry*> lookup_entry(Lookup&& lookup, Entry& entry, std::vector<char>& buf,
                                       const char* what, const std::string& name) {
        constexpr std::size_t kMaxBuffer = std::size_t{64} << 20;
        buf.resize(16384);
        for (;;) {
            Entry* found = nullptr;
            int rc = lookup(&entry, buf.data(), buf.size(), &found);
            if (rc == EINTR)
                continue;
            if (rc == ERANGE && buf.size() < kMaxBuffer) {
                buf.resize(buf.size() * 2);
                continue;
            }
            // POSIX says "not found" is 0 and no entry; getpwnam_r(3) lists
            // ENOENT, ESRCH, EBADF and EPERM as what some NSS modules say
            // instead. Any other error is a failed lookup, not an unknown name.
            if ((rc == 0 && !found) || rc == ENOENT || rc == ESRCH || rc == EBADF || rc == EPERM)
                return make_error(ENOENT, fmt::format("unknown {} '{}'", what, name));
            if (rc != 0)
                return make_error(
                    rc, fmt::format("cannot look up {} '{}': {}", what, name, std::strerror(rc)));
            return found;
        }
    }
};

} // namespace

HostOs& real_host_os() {
    static RealHostOs os;
    return os;
}

} // namespace tagmem
