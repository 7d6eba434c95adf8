// SPDX-License-Identifier: Apache-2.0
//
// tagmem-cdi-run: a container for the QEMU guests, made from a CDI spec the
// way podman and runc make one, for guests that cannot run podman (busybox
// initramfs). It applies one CDI device's container edits - the bind mounts,
// the device nodes with their owner and mode, the environment - inside new
// mount, PID, IPC, UTS and network namespaces, on a fresh tmpfs root entered
// with pivot_root (or, on an initramfs, runc's --no-pivot way), in a cgroup v1 device cgroup that
// allows what runc allows by default (mknod of any node; /dev/null, zero, full, random, urandom,
// tty) plus the spec's device rules, and nothing else. docs/containers.md says what it proves and
// what it does not.
//
//   tagmem-cdi-run SPEC NAME [--user UID:GID] [--bind HOST:CONTAINER]... -- CMD...
//
// SPEC is a spec file or a CDI directory: in a directory, as in a CDI
// registry, the devices of every *.json spec are merged (tagmemfs writes one
// file per tag), and a name two files offer is a conflict (exit 3).
// NAME is the device's name in SPEC (the part after kind=). HOST paths are
// bound read-only (the guest's static busybox and tools). Exit status: the
// command's; 3 NAME is not in SPEC (podman: "unresolvable CDI devices");
// 2 usage or setup error.

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

using nlohmann::json;

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "tagmem-cdi-run: %s: %s\n", what.c_str(), std::strerror(errno));
    std::exit(2);
}

void write_file(const std::string& path, const std::string& text) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size()))
        die("write " + text + " to " + path);
    ::close(fd);
}

void mkdirs(const std::string& path) {
    for (std::size_t at = 1; at <= path.size(); ++at)
        if (at == path.size() || path[at] == '/')
            if (::mkdir(path.substr(0, at).c_str(), 0755) != 0 && errno != EEXIST)
                die("mkdir " + path.substr(0, at));
}

std::string parent(const std::string& path) {
    return path.substr(0, path.rfind('/'));
}

// A bind mount of a file or directory, then the flags (a bind ignores them).
void bind_mount(const std::string& host, const std::string& target, unsigned long flags) {
    struct stat st {};
    if (::stat(host.c_str(), &st) != 0)
        die("stat " + host);
    mkdirs(S_ISDIR(st.st_mode) ? target : parent(target));
    if (!S_ISDIR(st.st_mode)) {
        int fd = ::open(target.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0)
            die("create " + target);
        ::close(fd);
    }
    if (::mount(host.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0)
        die("bind " + host);
    if (::mount(nullptr, target.c_str(), nullptr, MS_REMOUNT | MS_BIND | flags, nullptr) != 0)
        die("remount " + target);
}

void node(const std::string& path, mode_t type_mode, unsigned major, unsigned minor, uid_t uid,
          gid_t gid) {
    mkdirs(parent(path));
    if (::mknod(path.c_str(), type_mode, makedev(major, minor)) != 0)
        die("mknod " + path);
    if (::chown(path.c_str(), uid, gid) != 0 || ::chmod(path.c_str(), type_mode & 07777) != 0)
        die("chown/chmod " + path);
}

// The device cgroup: runc's defaults, then the spec's rules.
std::string make_cgroup(const json& edits) {
    const std::string top = "/sys/fs/cgroup";
    if (::mount("cgroup", top.c_str(), "cgroup", MS_NOSUID | MS_NODEV | MS_NOEXEC, "devices") !=
            0 &&
        errno != EBUSY)
        die("mount the cgroup v1 devices hierarchy on " + top);
    const std::string cg = top + "/tagmem-cdi-run." + std::to_string(::getpid());
    if (::mkdir(cg.c_str(), 0755) != 0)
        die("mkdir " + cg);
    write_file(cg + "/devices.deny", "a");
    for (const char* rule : {"c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm",
                             "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm"})
        write_file(cg + "/devices.allow", rule);
    for (const auto& n : edits.value("deviceNodes", json::array()))
        write_file(cg + "/devices.allow", n.value("type", "c") + " " +
                                              std::to_string(n.at("major").get<unsigned>()) + ":" +
                                              std::to_string(n.at("minor").get<unsigned>()) + " " +
                                              n.value("permissions", "rwm"));
    return cg;
}

[[noreturn]] void container(const json& edits, const std::vector<std::string>& binds,
                            const std::string& user, char** argv) {
    // A mount namespace of its own, not shared with the parent: pivot_root
    // moves the root of every process in the namespace.
    if (::unshare(CLONE_NEWNS) != 0 ||
        ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
        die("enter a private mount namespace");
    char root_template[] = "/tmp/cdi-root.XXXXXX";
    const std::string root = ::mkdtemp(root_template) ? root_template : (die("mkdtemp"), "");
    if (::mount("cdi-root", root.c_str(), "tmpfs", MS_NOSUID, "mode=0755") != 0)
        die("mount the root tmpfs");
    for (const auto& b : binds) {
        auto colon = b.find(':');
        bind_mount(b.substr(0, colon), root + b.substr(colon + 1), MS_RDONLY);
    }
    for (const auto& m : edits.value("mounts", json::array())) {
        unsigned long flags = 0;
        for (const auto& o : m.value("options", json::array())) {
            flags |= o == "ro" ? MS_RDONLY : 0;
            flags |= o == "nosuid" ? MS_NOSUID : 0;
            flags |= o == "nodev" ? MS_NODEV : 0;
        }
        bind_mount(m.at("hostPath"), root + m.at("containerPath").get<std::string>(), flags);
    }
    // The nodes a runtime makes in every container's /dev, then the spec's.
    for (auto [name, minor] : {std::pair{"null", 3u}, {"zero", 5u}, {"full", 7u}})
        node(root + "/dev/" + name, S_IFCHR | 0666, 1, minor, 0, 0);
    for (const auto& n : edits.value("deviceNodes", json::array()))
        node(root + n.at("path").get<std::string>(), S_IFCHR | (n.value("fileMode", 0666u) & 07777),
             n.at("major"), n.at("minor"), n.value("uid", 0u), n.value("gid", 0u));
    mkdirs(root + "/proc");
    mkdirs(root + "/tmp");
    if (::mount("proc", (root + "/proc").c_str(), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                nullptr) != 0)
        die("mount proc");
    // runc's pivot_root(".", "."): the old root ends up on top, then goes.
    // An initramfs root cannot be pivoted (EINVAL): then what runc does with
    // --no-pivot, move the new root over / and chroot into it.
    if (::chdir(root.c_str()) != 0)
        die("chdir " + root);
    if (::syscall(SYS_pivot_root, ".", ".") == 0) {
        if (::umount2(".", MNT_DETACH) != 0)
            die("detach the old root");
    } else if (errno != EINVAL || ::mount(".", "/", nullptr, MS_MOVE, nullptr) != 0 ||
               ::chroot(".") != 0) {
        die("enter the root " + root);
    }
    if (::chdir("/") != 0)
        die("chdir /");
    ::clearenv();
    ::setenv("PATH", "/bin", 1);
    for (const auto& e : edits.value("env", json::array())) {
        std::string kv = e;
        ::setenv(kv.substr(0, kv.find('=')).c_str(), kv.substr(kv.find('=') + 1).c_str(), 1);
    }
    if (!user.empty()) {
        auto uid = static_cast<uid_t>(std::stoul(user));
        auto gid = static_cast<gid_t>(std::stoul(user.substr(user.find(':') + 1)));
        if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0)
            die("switch to " + user);
    }
    ::execvp(argv[0], argv);
    die(std::string("exec ") + argv[0]);
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 5) {
        std::fputs("usage: tagmem-cdi-run SPEC NAME [--user UID:GID] [--bind HOST:CTR]... "
                   "-- CMD...\n",
                   stderr);
        return 2;
    }
    std::string user;
    std::vector<std::string> binds;
    int i = 3;
    for (; i < argc && std::strcmp(argv[i], "--") != 0; i += 2) {
        if (i + 1 >= argc)
            return 2;
        (std::strcmp(argv[i], "--user") == 0 ? user : binds.emplace_back()) = argv[i + 1];
    }
    if (i + 1 >= argc)
        return 2;
    std::vector<std::string> files;
    struct stat st {};
    if (::stat(argv[1], &st) == 0 && S_ISDIR(st.st_mode)) {
        for (const auto& e : std::filesystem::directory_iterator(argv[1]))
            if (e.path().extension() == ".json" && e.is_regular_file())
                files.push_back(e.path());
        std::sort(files.begin(), files.end());
    } else {
        files.push_back(argv[1]);
    }
    json edits;
    std::string kind;
    int found = 0;
    for (const auto& file : files) {
        std::ifstream in(file);
        json spec = json::parse(in, nullptr, false);
        if (spec.is_discarded())
            die("cannot parse " + file);
        for (const auto& d : spec.value("devices", json::array()))
            if (d.value("name", "") == argv[2]) {
                edits = d.at("containerEdits");
                kind = spec.value("kind", "");
                ++found;
            }
    }
    if (found > 1) {
        std::fprintf(stderr, "tagmem-cdi-run: conflicting CDI device %s/%s\n", kind.c_str(),
                     argv[2]);
        return 3;
    }
    if (edits.is_null()) {
        std::fprintf(stderr, "tagmem-cdi-run: unresolvable CDI device tagmem.io/tag/%s\n", argv[2]);
        return 3;
    }

    const std::string cg = make_cgroup(edits);
    write_file(cg + "/cgroup.procs", std::to_string(::getpid())); // the child inherits it
    if (::unshare(CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET) != 0)
        die("unshare");
    pid_t child = ::fork();
    if (child < 0)
        die("fork");
    if (child == 0)
        container(edits, binds, user, argv + i + 1);
    int status = 0;
    ::waitpid(child, &status, 0);
    // Out of the cgroup, then remove it.
    write_file("/sys/fs/cgroup/cgroup.procs", std::to_string(::getpid()));
    ::rmdir(cg.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
