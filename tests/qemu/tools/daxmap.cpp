// SPDX-License-Identifier: Apache-2.0
//
// daxmap: exercise a MAP_SHARED mapping of a device-dax node (or any mappable
// file) inside vmkit guests. It exists so the QEMU tests can prove, with the
// real kernel, that the bytes behind /dev/daxX.Y are the shared memory the tag
// promised: written by one guest, found in the host's backing file, read by a
// second guest, and still mapped after a daemon dies.
//
//   daxmap write    PATH SEED LEN [OFF] fill LEN bytes at byte OFF (default 0, a
//                                       multiple of 8) with the pattern for SEED
//   daxmap verify   PATH SEED LEN [OFF] check them (read-only open)
//   daxmap pingpong PATH ping|pong ROUNDS [TIMEOUT_S]
//                                       two hosts exchange ROUNDS messages
//   daxmap hold     PATH SECONDS [LEN]  keep rewriting+verifying for SECONDS,
//                                       or until SIGTERM (then the same final
//                                       check and report)
//
// Sizes take K/M/G suffixes; mappings are rounded up to 2 MiB, the dax align.
// The pattern (mirrored by vmkit.daxmap_pattern) is little-endian 64-bit words,
// word i = splitmix64 output i+1 from state SEED, so the host can find it.
// Exit status: 0 ok, 1 verification/protocol failure, 2 usage/system error,
// 3 SIGBUS (the mapping lost its backing).

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

namespace {

constexpr std::size_t kMapAlign = std::size_t{2} << 20;

using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "daxmap: %s: %s\n", what, std::strerror(errno));
    std::exit(2);
}

[[noreturn]] void usage() {
    std::fputs("usage: daxmap write|verify PATH SEED LEN [OFFSET]\n"
               "       daxmap pingpong PATH ping|pong ROUNDS [TIMEOUT_S]\n"
               "       daxmap hold PATH SECONDS [LEN]\n",
               stderr);
    std::exit(2);
}

std::uint64_t parse_u64(const char* s) {
    char* end = nullptr;
    errno = 0;
    unsigned long long v = std::strtoull(s, &end, 0);
    if (errno != 0 || end == s) {
        std::fprintf(stderr, "daxmap: bad number '%s'\n", s);
        std::exit(2);
    }
    int shift = 0;
    if (*end != '\0' && std::strchr("kKmMgG", *end) != nullptr) {
        shift = *end == 'k' || *end == 'K' ? 10 : *end == 'm' || *end == 'M' ? 20 : 30;
        ++end;
    }
    if (*end != '\0') {
        std::fprintf(stderr, "daxmap: bad number '%s'\n", s);
        std::exit(2);
    }
    return static_cast<std::uint64_t>(v) << shift;
}

std::uint64_t pattern_word(std::uint64_t seed, std::uint64_t i) {
    std::uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double seconds_since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

// A shared mapping of the first `len` bytes (rounded up to the dax align).
// Regular files are extended so the tool also runs on the host for a quick test.
class Mapping {
  public:
    Mapping(const char* path, std::uint64_t len, bool writable)
        : len_(static_cast<std::size_t>((len + kMapAlign - 1) / kMapAlign * kMapAlign)) {
        fd_ = ::open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
        if (fd_ < 0)
            die(path);
        struct stat st {};
        if (::fstat(fd_, &st) != 0)
            die("fstat");
        regular_ = S_ISREG(st.st_mode);
        if (regular_ && writable && static_cast<std::uint64_t>(st.st_size) < len_ &&
            ::ftruncate(fd_, static_cast<off_t>(len_)) != 0)
            die("ftruncate");
        int prot = PROT_READ | (writable ? PROT_WRITE : 0);
        addr_ = ::mmap(nullptr, len_, prot, MAP_SHARED, fd_, 0);
        if (addr_ == MAP_FAILED)
            die("mmap");
    }
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    ~Mapping() {
        ::munmap(addr_, len_);
        ::close(fd_);
    }
    std::uint64_t* words() const { return static_cast<std::uint64_t*>(addr_); }
    std::size_t len() const { return len_; }
    // Device-dax has no fsync; regular files are synced so the host sees them.
    void sync() const {
        if (regular_ && ::msync(addr_, len_, MS_SYNC) != 0)
            die("msync");
    }

  private:
    std::size_t len_;
    int fd_ = -1;
    bool regular_ = false;
    void* addr_ = nullptr;
};

struct Faults {
    long minflt = 0;
    long majflt = 0;
    static Faults now() {
        rusage ru{};
        ::getrusage(RUSAGE_SELF, &ru);
        return {ru.ru_minflt, ru.ru_majflt};
    }
};

void report(const char* op, const char* path, std::uint64_t seed, std::uint64_t bytes,
            Faults before, Clock::time_point t0, const char* status) {
    Faults after = Faults::now();
    double secs = seconds_since(t0);
    double mbps = secs > 0 ? static_cast<double>(bytes) / secs / 1e6 : 0.0;
    std::printf("daxmap %s: path=%s seed=%#llx bytes=%llu minflt=%ld majflt=%ld seconds=%.3f "
                "MBps=%.1f %s\n",
                op, path, static_cast<unsigned long long>(seed),
                static_cast<unsigned long long>(bytes), after.minflt - before.minflt,
                after.majflt - before.majflt, secs, mbps, status);
}

void fill(std::uint64_t* w, std::uint64_t nwords, std::uint64_t seed) {
    for (std::uint64_t i = 0; i < nwords; ++i)
        w[i] = pattern_word(seed, i);
}

// Returns the number of mismatching words; prints the first one.
std::uint64_t check(const std::uint64_t* w, std::uint64_t nwords, std::uint64_t seed) {
    std::uint64_t bad = 0;
    for (std::uint64_t i = 0; i < nwords; ++i) {
        std::uint64_t want = pattern_word(seed, i);
        if (w[i] != want) {
            if (bad == 0)
                std::printf("daxmap: first mismatch at offset %#llx: got %#018llx want %#018llx\n",
                            static_cast<unsigned long long>(i * 8),
                            static_cast<unsigned long long>(w[i]),
                            static_cast<unsigned long long>(want));
            ++bad;
        }
    }
    return bad;
}

int cmd_write_verify(bool write, const char* path, std::uint64_t seed, std::uint64_t len,
                     std::uint64_t offset) {
    if (offset % 8) {
        std::fprintf(stderr, "daxmap: offset %llu is not a multiple of 8\n",
                     static_cast<unsigned long long>(offset));
        return 2;
    }
    Faults f0 = Faults::now();
    auto t0 = Clock::now();
    Mapping m(path, offset + len, write);
    std::uint64_t nwords = len / 8;
    std::uint64_t* at = m.words() + offset / 8;
    if (write) {
        fill(at, nwords, seed);
        m.sync();
        report("write", path, seed, nwords * 8, f0, t0, "OK");
        return 0;
    }
    std::uint64_t bad = check(at, nwords, seed);
    report("verify", path, seed, nwords * 8, f0, t0, bad ? "FAIL" : "OK");
    if (bad)
        std::printf("daxmap verify: %llu of %llu words differ\n",
                    static_cast<unsigned long long>(bad), static_cast<unsigned long long>(nwords));
    return bad ? 1 : 0;
}

// ---- pingpong -------------------------------------------------------------
//
// Each side owns one 128-byte line at the start of the mapping (ping: 0,
// pong: 4096) and only reads the other's. Both sides publish a fresh random
// nonce and echo the peer's nonce; a side is connected once the peer echoes
// its nonce. That makes stale contents from an earlier run harmless, whichever
// guest boots first. Then for k = 1..ROUNDS ping writes "ping #k" and seq=k
// (release); pong waits for seq==k (acquire), answers "pong #k", and so on.

constexpr std::size_t kMsgWords = 12; // 96 bytes of text incl. NUL

struct Line {
    std::uint64_t nonce;
    std::uint64_t echo;
    std::uint64_t seq;
    std::uint64_t pad;
    std::uint64_t msg[kMsgWords];
};
static_assert(sizeof(Line) == 128);

std::uint64_t load(std::uint64_t& w) {
    return std::atomic_ref<std::uint64_t>(w).load(std::memory_order_acquire);
}
void store(std::uint64_t& w, std::uint64_t v) {
    std::atomic_ref<std::uint64_t>(w).store(v, std::memory_order_release);
}

// Message text travels as relaxed atomic words, ordered by the seq release.
void put_msg(Line& l, const std::string& s) {
    std::uint64_t buf[kMsgWords] = {};
    std::memcpy(buf, s.data(), std::min(s.size(), sizeof(buf) - 1));
    for (std::size_t i = 0; i < kMsgWords; ++i)
        std::atomic_ref<std::uint64_t>(l.msg[i]).store(buf[i], std::memory_order_relaxed);
}
std::string get_msg(Line& l) {
    std::uint64_t buf[kMsgWords];
    for (std::size_t i = 0; i < kMsgWords; ++i)
        buf[i] = std::atomic_ref<std::uint64_t>(l.msg[i]).load(std::memory_order_relaxed);
    const char* c = reinterpret_cast<const char*>(buf);
    return std::string(c, strnlen(c, sizeof(buf) - 1));
}

// Spin until pred() holds; false on timeout. Checks the clock every 4096 spins.
template <class Pred> bool spin_until(Pred pred, double timeout_s) {
    auto t0 = Clock::now();
    for (std::uint64_t n = 1;; ++n) {
        if (pred())
            return true;
        if ((n & 4095) == 0 && seconds_since(t0) > timeout_s)
            return false;
    }
}

std::uint64_t random_nonce() {
    std::uint64_t v = 0;
    while (v == 0) {
        if (::getrandom(&v, sizeof(v), 0) != static_cast<ssize_t>(sizeof(v)))
            die("getrandom");
    }
    return v;
}

void print_stats(const char* role, std::vector<double>& us) {
    if (us.empty())
        return;
    std::sort(us.begin(), us.end());
    double sum = 0;
    for (double v : us)
        sum += v;
    auto pct = [&](double p) {
        return us[std::min(us.size() - 1,
                           static_cast<std::size_t>(p * static_cast<double>(us.size())))];
    };
    std::printf("daxmap pingpong: role=%s rounds=%zu rtt_us min=%.1f median=%.1f p90=%.1f p99=%.1f "
                "max=%.1f mean=%.1f\n",
                role, us.size(), us.front(), pct(0.5), pct(0.9), pct(0.99), us.back(),
                sum / static_cast<double>(us.size()));
}

int cmd_pingpong(const char* path, std::string_view role, std::uint64_t rounds, double timeout_s) {
    bool ping = role == "ping";
    if (!ping && role != "pong")
        usage();
    Mapping m(path, kMapAlign, true);
    auto* base = reinterpret_cast<unsigned char*>(m.words());
    Line& a = *reinterpret_cast<Line*>(base);        // written by ping
    Line& b = *reinterpret_cast<Line*>(base + 4096); // written by pong
    Line& mine = ping ? a : b;
    Line& peer = ping ? b : a;
    const char* r = ping ? "ping" : "pong";

    std::uint64_t nonce = random_nonce();
    store(mine.seq, 0);
    store(mine.echo, 0);
    store(mine.nonce, nonce);
    auto t_hs = Clock::now();
    bool connected = spin_until(
        [&] {
            std::uint64_t echoed = load(peer.echo); // read first: implies peer.nonce below
            std::uint64_t pn = load(peer.nonce);
            if (load(mine.echo) != pn)
                store(mine.echo, pn);
            return echoed == nonce;
        },
        timeout_s);
    if (!connected) {
        std::printf("daxmap pingpong: role=%s FAIL handshake timeout after %.0fs (nonce %#llx)\n",
                    r, timeout_s, static_cast<unsigned long long>(nonce));
        return 1;
    }
    std::printf("daxmap pingpong: role=%s connected after %.2fs nonce=%#llx peer=%#llx\n", r,
                seconds_since(t_hs), static_cast<unsigned long long>(nonce),
                static_cast<unsigned long long>(load(peer.nonce)));

    std::vector<double> rtt_us;
    std::vector<std::string> log;
    rtt_us.reserve(rounds);
    log.reserve(rounds);
    auto t_all = Clock::now();
    auto t_prev = t_all;
    for (std::uint64_t k = 1; k <= rounds; ++k) {
        std::string expect = (ping ? "pong #" : "ping #") + std::to_string(k);
        if (ping) {
            auto t0 = Clock::now();
            put_msg(mine, "ping #" + std::to_string(k));
            store(mine.seq, k);
            if (!spin_until([&] { return load(peer.seq) == k; }, timeout_s)) {
                std::printf("daxmap pingpong: role=ping FAIL no reply to #%llu\n",
                            static_cast<unsigned long long>(k));
                return 1;
            }
            rtt_us.push_back(seconds_since(t0) * 1e6);
        } else {
            if (!spin_until([&] { return load(peer.seq) == k; }, timeout_s)) {
                std::printf("daxmap pingpong: role=pong FAIL no message #%llu\n",
                            static_cast<unsigned long long>(k));
                return 1;
            }
            auto now = Clock::now();
            if (k > 1) // one full round as pong sees it
                rtt_us.push_back(std::chrono::duration<double>(now - t_prev).count() * 1e6);
            t_prev = now;
        }
        std::string got = get_msg(peer);
        if (!ping) {
            put_msg(mine, "pong #" + std::to_string(k) + " <- " + got);
            store(mine.seq, k);
        }
        if (got.rfind(expect, 0) != 0 ||
            (got.size() > expect.size() && got[expect.size()] != ' ')) {
            std::printf("daxmap pingpong: role=%s FAIL round %llu got '%s' want '%s...'\n", r,
                        static_cast<unsigned long long>(k), got.c_str(), expect.c_str());
            return 1;
        }
        log.push_back(std::move(got));
    }
    double total = seconds_since(t_all);
    for (std::size_t i = 0; i < log.size(); ++i)
        std::printf("daxmap %s: #%zu got '%s'\n", r, i + 1, log[i].c_str());
    print_stats(r, rtt_us);
    std::printf("daxmap pingpong: role=%s OK rounds=%llu seconds=%.3f\n", r,
                static_cast<unsigned long long>(rounds), total);
    return 0;
}

// ---- hold -----------------------------------------------------------------

// SIGTERM ends a hold early but cleanly: a scenario can keep the mapping
// busy for exactly as long as its slow steps take, whatever the host load.
volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_sigterm(int) {
    g_stop = 1;
}

extern "C" void on_sigbus(int) {
    static const char msg[] = "daxmap hold: SIGBUS: the mapping lost its backing\n";
    ssize_t n = ::write(STDOUT_FILENO, msg, sizeof(msg) - 1);
    (void)n;
    ::_exit(3);
}

int cmd_hold(const char* path, std::uint64_t seconds, std::uint64_t len) {
    struct sigaction sa {};
    sa.sa_handler = on_sigbus;
    ::sigaction(SIGBUS, &sa, nullptr);
    sa.sa_handler = on_sigterm;
    ::sigaction(SIGTERM, &sa, nullptr);
    Mapping m(path, len, true);
    std::uint64_t nwords = m.len() / 8;
    fill(m.words(), nwords, 0);
    std::printf("daxmap hold: mapped path=%s bytes=%zu for %llus\n", path, m.len(),
                static_cast<unsigned long long>(seconds));
    std::fflush(stdout);
    auto t0 = Clock::now();
    std::uint64_t iter = 0;
    do {
        if (std::uint64_t bad = check(m.words(), nwords, iter); bad != 0) {
            std::printf("daxmap hold: FAIL iteration %llu: %llu words differ\n",
                        static_cast<unsigned long long>(iter),
                        static_cast<unsigned long long>(bad));
            return 1;
        }
        ++iter;
        fill(m.words(), nwords, iter);
    } while (!g_stop && seconds_since(t0) < static_cast<double>(seconds));
    if (check(m.words(), nwords, iter) != 0) {
        std::printf("daxmap hold: FAIL final check\n");
        return 1;
    }
    std::printf("daxmap hold: OK path=%s iterations=%llu seconds=%.1f\n", path,
                static_cast<unsigned long long>(iter), seconds_since(t0));
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    if (argc < 3)
        usage();
    std::string_view cmd = argv[1];
    const char* path = argv[2];
    if ((cmd == "write" || cmd == "verify") && (argc == 5 || argc == 6))
        return cmd_write_verify(cmd == "write", path, parse_u64(argv[3]), parse_u64(argv[4]),
                                argc == 6 ? parse_u64(argv[5]) : 0);
    if (cmd == "pingpong" && (argc == 5 || argc == 6))
        return cmd_pingpong(path, argv[3], parse_u64(argv[4]),
                            argc == 6 ? static_cast<double>(parse_u64(argv[5])) : 120.0);
    if (cmd == "hold" && (argc == 4 || argc == 5))
        return cmd_hold(path, parse_u64(argv[3]), argc == 5 ? parse_u64(argv[4]) : kMapAlign);
    usage();
}
