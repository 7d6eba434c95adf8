// SPDX-License-Identifier: Apache-2.0
// tagmem-bench: the microsecond measurements of docs/benchmarks.md, in C++ so
// that no interpreter sits between the clock and the system call. bench/run.py
// builds the hosts, mounts tagmemfs and its tmpfs twin, and calls these
// subcommands; each prints one JSON object on stdout.
//
//   warm-stat  --names F --root A --root B --rounds R --ops M   stat(<tag>/data), random tags
//   warm-open  --names F --root A --root B --rounds R --ops M   open+read+close <tag>/metadata
//   lsl        --root A [--root B] --rounds R                   readdir + lstat of every entry
//   cold       --names F --root A --socket S --k K [--what data|metadata]
//   mirror     --from A --to B                                  copy the layout onto a tmpfs
//   stats      --socket S                                       the daemon's request counters
//
// Warm figures: every path is touched twice first; then each round draws a
// random sequence of M operations and runs it on each root (the order of the
// roots alternates between rounds), recording nanoseconds per operation.
#include <nlohmann/json.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& what) {
    throw std::runtime_error(what + (errno ? std::string(": ") + std::strerror(errno) : ""));
}

double ns_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
}

struct Args {
    std::map<std::string, std::vector<std::string>> opts;

    Args(int argc, char** argv, int first) {
        for (int i = first; i < argc; ++i) {
            std::string key = argv[i];
            if (key.rfind("--", 0) != 0 || i + 1 >= argc)
                throw std::runtime_error("bad argument: " + key);
            opts[key.substr(2)].push_back(argv[++i]);
        }
    }
    std::string str(const std::string& k, const std::string& def = "") const {
        auto it = opts.find(k);
        if (it == opts.end()) {
            if (def.empty())
                throw std::runtime_error("missing --" + k);
            return def;
        }
        return it->second.back();
    }
    long num(const std::string& k, long def) const {
        auto it = opts.find(k);
        return it == opts.end() ? def : std::stol(it->second.back());
    }
    std::vector<std::string> all(const std::string& k) const {
        auto it = opts.find(k);
        return it == opts.end() ? std::vector<std::string>{} : it->second;
    }
};

std::vector<std::string> read_names(const std::string& path) {
    std::ifstream in(path);
    if (!in)
        die("cannot read " + path);
    std::vector<std::string> names;
    for (std::string line; std::getline(in, line);)
        if (!line.empty())
            names.push_back(line);
    if (names.empty())
        throw std::runtime_error(path + ": no names");
    return names;
}

// One operation on one path; returns false on failure.
bool do_stat(const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0;
}

bool do_open_read(const std::string& path) {
    static char buf[65536];
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n;
    std::size_t total = 0;
    while ((n = ::read(fd, buf, sizeof buf)) > 0)
        total += static_cast<std::size_t>(n);
    ::close(fd);
    return n == 0 && total > 0;
}

json warm(const Args& a, const std::string& leaf, bool (*op)(const std::string&)) {
    auto names = read_names(a.str("names"));
    auto roots = a.all("root");
    long rounds = a.num("rounds", 9), ops = a.num("ops", 100000);
    std::mt19937_64 rng(static_cast<std::uint64_t>(a.num("seed", 1)));
    std::uniform_int_distribution<std::size_t> pick(0, names.size() - 1);
    std::vector<std::uint32_t> seq(static_cast<std::size_t>(ops));
    json out = json::object();
    std::vector<std::vector<std::string>> paths(roots.size());
    for (std::size_t r = 0; r < roots.size(); ++r) {
        paths[r].reserve(names.size());
        for (const auto& n : names)
            paths[r].push_back(roots[r] + "/" + n + "/" + leaf);
        // Warm: every path once (twice: the first may fill attributes lazily).
        for (int pass = 0; pass < 2; ++pass)
            for (const auto& p : paths[r])
                if (!op(p))
                    die("warm-up failed on " + p);
        out[roots[r]] = json::array();
    }
    for (long round = 0; round < rounds; ++round) {
        // A fresh random sequence each round, the same for every root.
        for (auto& s : seq)
            s = static_cast<std::uint32_t>(pick(rng));
        for (std::size_t k = 0; k < roots.size(); ++k) {
            std::size_t r = (round % 2) ? roots.size() - 1 - k : k;
            const auto& ps = paths[r];
            std::size_t failed = 0;
            auto t0 = Clock::now();
            for (auto i : seq)
                failed += !op(ps[i]);
            double ns = ns_since(t0);
            if (failed)
                throw std::runtime_error(std::to_string(failed) + " operations failed under " +
                                         roots[r]);
            out[roots[r]].push_back(ns / static_cast<double>(seq.size()));
        }
    }
    return {{"ns_per_op", out}, {"ops_per_round", ops}, {"rounds", rounds}, {"n", names.size()}};
}

// readdir + lstat of every entry, as `ls -l` does (without its sorting and
// printing); seconds per pass, and the entries seen.
double list_long(const std::string& root, std::size_t* entries) {
    auto t0 = Clock::now();
    DIR* d = ::opendir(root.c_str());
    if (!d)
        die("opendir " + root);
    int dfd = ::dirfd(d);
    std::size_t n = 0;
    errno = 0;
    while (auto* e = ::readdir(d)) {
        if (e->d_name[0] == '.' &&
            (e->d_name[1] == 0 || (e->d_name[1] == '.' && e->d_name[2] == 0)))
            continue;
        struct statx stx;
        if (::statx(dfd, e->d_name, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &stx) != 0)
            die(std::string("statx ") + e->d_name);
        ++n;
    }
    if (errno)
        die("readdir " + root);
    ::closedir(d);
    *entries = n;
    return ns_since(t0) / 1e9;
}

json lsl(const Args& a) {
    auto roots = a.all("root");
    long rounds = a.num("rounds", 5);
    json out = json::object(), counts = json::object();
    for (const auto& r : roots)
        out[r] = json::array();
    for (long round = 0; round < rounds; ++round)
        for (std::size_t k = 0; k < roots.size(); ++k) {
            const auto& r = roots[(round % 2) ? roots.size() - 1 - k : k];
            std::size_t n = 0;
            out[r].push_back(list_long(r, &n));
            counts[r] = n;
        }
    return {{"seconds", out}, {"entries", counts}};
}

std::string query_socket(const std::string& path, const std::string& line) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path.c_str());
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        ::close(fd);
        die("connect " + path);
    }
    std::string req = line + "\n";
    if (::write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size()))
        die("write " + path);
    std::string reply;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) {
        reply.append(buf, static_cast<std::size_t>(n));
        if (reply.find('\n') != std::string::npos)
            break;
    }
    ::close(fd);
    return reply;
}

json daemon_stats(const std::string& socket) {
    return json::parse(query_socket(socket, R"({"op":"stats"})"));
}

std::map<std::string, std::uint64_t> counters(const std::string& socket) {
    std::map<std::string, std::uint64_t> out;
    json stats = daemon_stats(socket); // kept alive: items() refers into it
    for (auto& [k, v] : stats.at("requests").items())
        out[k] = v.get<std::uint64_t>();
    return out;
}

// First access of K never-touched random tags, each timed alone, with the
// FUSE requests it cost (read from the daemon before and after).
json cold(const Args& a) {
    auto names = read_names(a.str("names"));
    auto root = a.str("root");
    auto socket = a.str("socket");
    auto what = a.str("what", "data");
    auto k = static_cast<std::size_t>(a.num("k", 100));
    std::mt19937_64 rng(static_cast<std::uint64_t>(a.num("seed", 7)));
    std::shuffle(names.begin(), names.end(), rng);
    k = std::min(k, names.size());
    json us = json::array(), reqs = json::array(), kinds = json::object();
    for (std::size_t i = 0; i < k; ++i) {
        std::string path = root + "/" + names[i] + "/" + what;
        auto before = counters(socket);
        auto t0 = Clock::now();
        bool ok = what == "metadata" ? do_open_read(path) : do_stat(path);
        double ns = ns_since(t0);
        if (!ok)
            die("cold access failed: " + path);
        auto after = counters(socket);
        std::uint64_t total = 0;
        for (auto& [kind, v] : after) {
            auto d = v - before[kind];
            total += d;
            if (d)
                kinds[kind] = kinds.value(kind, std::uint64_t{0}) + d;
        }
        us.push_back(ns / 1e3);
        reqs.push_back(total);
    }
    return {{"us", us}, {"requests", reqs}, {"requests_by_kind", kinds}, {"k", k}, {"what", what}};
}

std::string read_all(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die("open " + path);
    std::string s;
    char buf[65536];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0)
        s.append(buf, static_cast<std::size_t>(n));
    ::close(fd);
    if (n < 0)
        die("read " + path);
    return s;
}

void apply_owner_mode(const std::string& path, const struct stat& st, bool link) {
    if (::lchown(path.c_str(), st.st_uid, st.st_gid) != 0)
        die("chown " + path);
    if (!link && ::chmod(path.c_str(), st.st_mode & 07777) != 0)
        die("chmod " + path);
}

// The tmpfs twin: the same names, types, modes, owners, link targets, file
// contents and device numbers as the mount.
json mirror(const Args& a) {
    auto from = a.str("from"), to = a.str("to");
    auto t0 = Clock::now();
    DIR* d = ::opendir(from.c_str());
    if (!d)
        die("opendir " + from);
    std::size_t tags = 0, files = 0;
    while (auto* e = ::readdir(d)) {
        std::string tag = e->d_name;
        if (tag == "." || tag == "..")
            continue;
        std::string src = from + "/" + tag, dst = to + "/" + tag;
        struct stat dst_st;
        if (::lstat(src.c_str(), &dst_st) != 0)
            die("lstat " + src);
        if (::mkdir(dst.c_str(), 0700) != 0)
            die("mkdir " + dst);
        DIR* sub = ::opendir(src.c_str());
        if (!sub)
            die("opendir " + src);
        while (auto* f = ::readdir(sub)) {
            std::string name = f->d_name;
            if (name == "." || name == "..")
                continue;
            std::string s = src + "/" + name, t = dst + "/" + name;
            struct stat st;
            if (::lstat(s.c_str(), &st) != 0)
                die("lstat " + s);
            // The twin's data is what issue 6 asks for whatever the mount does
            // (a device inode, or a link to one): the character node itself.
            if (name == "data" && S_ISLNK(st.st_mode) && ::stat(s.c_str(), &st) != 0)
                die("stat " + s);
            if (S_ISLNK(st.st_mode)) {
                char target[4096];
                auto n = ::readlink(s.c_str(), target, sizeof target - 1);
                if (n < 0)
                    die("readlink " + s);
                target[n] = 0;
                if (::symlink(target, t.c_str()) != 0)
                    die("symlink " + t);
                apply_owner_mode(t, st, true);
            } else if (S_ISREG(st.st_mode)) {
                std::string content = read_all(s);
                int fd = ::open(t.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
                if (fd < 0 || ::write(fd, content.data(), content.size()) !=
                                  static_cast<ssize_t>(content.size()))
                    die("write " + t);
                ::close(fd);
                apply_owner_mode(t, st, false);
            } else if (S_ISCHR(st.st_mode)) {
                if (::mknod(t.c_str(), S_IFCHR | 0600, st.st_rdev) != 0)
                    die("mknod " + t);
                apply_owner_mode(t, st, false);
            } else {
                throw std::runtime_error("unexpected file type at " + s);
            }
            ++files;
        }
        ::closedir(sub);
        apply_owner_mode(dst, dst_st, false);
        ++tags;
    }
    ::closedir(d);
    return {{"tags", tags}, {"files", files}, {"seconds", ns_since(t0) / 1e9}};
}

int usage() {
    std::fprintf(stderr, "usage: tagmem-bench warm-stat|warm-open|lsl|cold|mirror|stats "
                         "--option value ... (see the top of bench/tagmem_bench.cpp)\n");
    return 2;
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2)
        return usage();
    std::string cmd = argv[1];
    try {
        Args a(argc, argv, 2);
        json out;
        if (cmd == "warm-stat")
            out = warm(a, "data", do_stat);
        else if (cmd == "warm-open")
            out = warm(a, "metadata", do_open_read);
        else if (cmd == "lsl")
            out = lsl(a);
        else if (cmd == "cold")
            out = cold(a);
        else if (cmd == "mirror")
            out = mirror(a);
        else if (cmd == "stats")
            out = daemon_stats(a.str("socket"));
        else
            return usage();
        std::printf("%s\n", out.dump().c_str());
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tagmem-bench %s: %s\n", cmd.c_str(), e.what());
        return 1;
    }
}
