// SPDX-License-Identifier: Apache-2.0
#include "daemon.hpp"

#include "config.hpp"
#include "discovery.hpp"
#include "fd.hpp"
#include "host_os.hpp"
#include "mount.hpp"
#include "notify.hpp"
#include "tag_tree.hpp"

#include <fmt/format.h>

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>

namespace tagmem {
namespace {

// Written by the SIGHUP handler (async-signal-safe), read by the rescan thread.
std::atomic<int> g_rescan_fd{-1};

void on_sighup(int) {
    int fd = g_rescan_fd.load();
    if (fd >= 0) {
        std::uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(fd, &one, sizeof one);
    }
}

class Daemon {
  public:
    explicit Daemon(const DaemonOptions& o) : opt_(o) {}

    int run();

  private:
    std::string config_path() const {
        return opt_.config_path.empty() ? kDefaultConfigPath : opt_.config_path;
    }
    Config load(bool* ok) const {
        Config c = load_config(config_path(), opt_.config_path.empty(), real_host_os());
        *ok = c.errors.empty();
        for (const auto& e : c.errors)
            log::error("config: {}", e);
        return c;
    }
    void rescan(const char* why);
    void rescan_loop();

    DaemonOptions opt_;
    Config config_;
    TagTree tree_;
    FsContext context_;
    fuse_session* se_ = nullptr;
    Fd rescan_event_;
    Fd stop_event_;
};

void Daemon::rescan(const char* why) {
    bool ok = false;
    Config fresh = load(&ok);
    if (ok)
        config_ = std::move(fresh);
    else
        log::error("{}: keeping the previous configuration", config_path());
    auto scan = scan_host(config_, real_host_os());
    if (!scan) {
        log::error("rescan ({}) failed: {}; the namespace is unchanged", why, scan.error().message);
        return;
    }
    for (const auto& r : scan->rejected)
        log::warning("{}: rejected: {}", r.device, r.reason);
    auto changes = tree_.update(*scan);
    for (const auto& e : changes.events)
        log::info("tag {} {} ({}{}{})", e.tag.str(), to_string(e.kind), e.state,
                  e.device.empty() ? "" : ", ", e.device);
    if (se_)
        notify_kernel(se_, changes);
    log::info("rescan ({}): {} tags, {} changes", why, tree_.tag_count(), changes.events.size());
}

void Daemon::rescan_loop() {
    for (;;) {
        pollfd fds[2] = {{rescan_event_.get(), POLLIN, 0}, {stop_event_.get(), POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            log::error("rescan thread: poll: {}", std::strerror(errno));
            return;
        }
        if (fds[1].revents)
            return;
        if (fds[0].revents) {
            std::uint64_t n = 0;
            [[maybe_unused]] auto r = ::read(rescan_event_.get(), &n, sizeof n);
            try {
                rescan("SIGHUP");
            } catch (const std::exception& e) {
                log::error("rescan failed: {}", e.what());
            }
        }
    }
}

int Daemon::run() {
    bool ok = false;
    config_ = load(&ok);
    if (!ok) {
        log::error("{}: invalid configuration; not mounting", config_path());
        return 1;
    }
    auto options = mount_options(opt_.mount_options);
    if (!options) {
        log::error("{}", options.error().message);
        return 2;
    }
    rescan("start");

    if (auto rec = recover_mount_point(opt_.mount_point); !rec) {
        log::error("{}", rec.error().message);
        return 1;
    }
    if (auto abs = real_host_os().real_path(opt_.mount_point)) // mountinfo has absolute paths
        opt_.mount_point = *abs;
    context_.tree = &tree_;
    auto mount = FuseMount::mount(opt_.mount_point, *options, &context_);
    if (!mount) {
        log::error("{}", mount.error().message);
        return 1;
    }
    se_ = mount->session();
    log::info("mounted {} tags on {} ({})", tree_.tag_count(), opt_.mount_point, *options);

    if (!opt_.foreground) {
        if (fuse_daemonize(0) != 0) {
            log::error("cannot daemonize");
            return 1;
        }
        log::use_syslog();
    }

    rescan_event_ = Fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    stop_event_ = Fd(::eventfd(0, EFD_CLOEXEC));
    g_rescan_fd = rescan_event_.get();

    // Only the FUSE workers and the main thread take signals; the rescan
    // thread must never be interrupted inside libdaxctl.
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    std::thread rescanner([this] { rescan_loop(); });
    pthread_sigmask(SIG_SETMASK, &old, nullptr);

    struct sigaction hup {};
    hup.sa_handler = on_sighup;
    sigemptyset(&hup.sa_mask);
    hup.sa_flags = SA_RESTART;
    sigaction(SIGHUP, &hup, nullptr);
    // SIGTERM/SIGINT end the session loop (libfuse's handlers; SIGHUP is
    // ours already, and libfuse leaves handlers it did not install alone).
    fuse_set_signal_handlers(se_);

    fuse_loop_config* cfg = fuse_loop_cfg_create();
    if (opt_.threads > 0)
        fuse_loop_cfg_set_max_threads(cfg, opt_.threads);
    int rc = fuse_session_loop_mt(se_, cfg);
    fuse_loop_cfg_destroy(cfg);

    fuse_remove_signal_handlers(se_);
    g_rescan_fd = -1;
    std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(stop_event_.get(), &one, sizeof one);
    rescanner.join();
    se_ = nullptr;
    log::info("unmounting {}", opt_.mount_point);
    // libfuse reports the signal that ended the loop as its result.
    return rc == 0 || rc == SIGTERM || rc == SIGINT ? 0 : 1;
}

} // namespace

int run_daemon(const DaemonOptions& options) {
    log::set_level(options.log_level);
    Daemon d(options);
    return d.run();
}

} // namespace tagmem
