// SPDX-License-Identifier: Apache-2.0
#include "daemon.hpp"

#include "config.hpp"
#include "fd.hpp"
#include "host_os.hpp"
#include "host_state.hpp"
#include "mount.hpp"
#include "node_dir.hpp"
#include "notify.hpp"
#include "tag_tree.hpp"
#include "uevent_plan.hpp"
#include "watch_server.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <optional>
#include <set>
#include <thread>

namespace tagmem {
namespace {

// Written by the SIGHUP handler (async-signal-safe), read by the event thread.
std::atomic<int> g_rescan_fd{-1};

void on_sighup(int) {
    int fd = g_rescan_fd.load();
    if (fd >= 0) {
        std::uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(fd, &one, sizeof one);
    }
}

void drain_eventfd(int fd) {
    std::uint64_t n = 0;
    [[maybe_unused]] auto r = ::read(fd, &n, sizeof n);
}

class Daemon {
  public:
    explicit Daemon(const DaemonOptions& o) : opt_(o), state_(real_host_os()) {}

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
    void on_uevents();
    void publish(const TagDelta& delta, const char* why);
    void event_loop();

    DaemonOptions opt_;
    Config config_;
    HostState state_; // owned by the event thread once serving
    std::optional<NodeDir> nodes_;
    std::unique_ptr<TagTree> tree_;
    FsContext context_;
    fuse_session* se_ = nullptr;
    std::optional<UeventMonitor> uevents_;
    std::set<std::string> awaiting_bind_; // dax devices added, not yet bound
    std::optional<WatchServer> watchers_;
    Fd rescan_event_;
    Fd stop_event_;
};

// Applies a delta to the tree, then tells the kernel, then the watchers: a
// watcher that hears of a tag finds it in the mount.
void Daemon::publish(const TagDelta& delta, const char* why) {
    if (delta.empty())
        return;
    // Nodes first, so that a data link never points at nothing; nodes that
    // go, last, once no name leads to them any more.
    std::vector<std::string> stale;
    for (const auto& r : delta.upserts) {
        if (!r->usable()) {
            stale.push_back(r->tag.str());
            continue;
        }
        const auto& a = r->access;
        if (auto ok = nodes_->put(r->tag.str(), r->device()->dev.devno, a.uid, a.gid, a.mode); !ok)
            log::error("tag {}: {}", r->tag.str(), ok.error().message);
    }
    for (const auto& tag : delta.removals)
        stale.push_back(tag.str());
    auto changes = tree_->apply(delta);
    if (se_)
        notify_kernel(se_, changes);
    for (const auto& name : stale)
        nodes_->remove(name);
    // The first scan's tags are summed up by rescan(); one line each for
    // 100,000 tags would flood the journal at every boot.
    const bool first = std::string_view(why) == "start";
    for (const auto& e : changes.events)
        log::at(first ? log::Level::debug : log::Level::info, "tag {} {} ({}{}{}) [{}]",
                e.tag.str(), to_string(e.kind), e.state, e.device.empty() ? "" : ", ", e.device,
                why);
    if (watchers_)
        watchers_->publish(changes.events);
}

void Daemon::rescan(const char* why) {
    bool ok = false;
    Config fresh = load(&ok);
    if (ok)
        config_ = std::move(fresh);
    else
        log::error("{}: keeping the previous configuration", config_path());
    const auto t0 = std::chrono::steady_clock::now();
    auto delta = state_.rescan(config_);
    const auto t1 = std::chrono::steady_clock::now();
    if (!delta) {
        log::error("rescan ({}) failed: {}; the namespace is unchanged", why,
                   delta.error().message);
        return;
    }
    for (const auto& r : state_.snapshot().rejected)
        log::warning("{}: rejected: {}", r.device, r.reason);
    publish(*delta, why);
    // A scan allocates and frees a lot (libdaxctl's own objects among it):
    // give the freed heap back rather than keep it as resident memory.
    malloc_trim(0);
    auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
    log::info("rescan ({}): {} tags in {:.0f} ms (scan {:.0f} ms, publish {:.0f} ms)", why,
              state_.tag_count(), ms(std::chrono::steady_clock::now() - t0), ms(t1 - t0),
              ms(std::chrono::steady_clock::now() - t1));
}

void Daemon::on_uevents() {
    // Drain everything pending first: a burst becomes one update.
    auto events = uevents_->drain();
    for (const auto& ev : events)
        log::debug("uevent {} {} {}", ev.action, ev.subsystem, ev.sysname);
    auto plan = plan_uevents(events, awaiting_bind_);
    for (const auto& parent : plan.parents)
        for (auto& name : state_.devices_under(parent))
            plan.devices.insert(std::move(name));
    if (!plan.devices.empty())
        publish(state_.refresh(plan.devices), "uevent");
}

void Daemon::event_loop() {
    using clock = std::chrono::steady_clock;
    auto next_poll = clock::now() + std::chrono::milliseconds(opt_.extent_poll_ms);
    std::vector<pollfd> fds;
    for (;;) {
        fds.clear();
        fds.push_back({stop_event_.get(), POLLIN, 0});
        fds.push_back({rescan_event_.get(), POLLIN, 0});
        fds.push_back({uevents_ ? uevents_->fd() : -1, POLLIN, 0});
        std::size_t first_watch_fd = fds.size();
        if (watchers_)
            watchers_->poll_fds(fds);
        int timeout = -1;
        bool polling = opt_.extent_poll_ms > 0 && state_.has_dc_regions();
        if (polling) {
            auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(next_poll - clock::now());
            timeout = static_cast<int>(std::max<long long>(0, left.count()));
        }
        if (::poll(fds.data(), fds.size(), timeout) < 0) {
            if (errno == EINTR)
                continue;
            log::error("event loop: poll: {}", std::strerror(errno));
            return;
        }
        try {
            if (fds[0].revents)
                return;
            if (fds[1].revents) {
                drain_eventfd(rescan_event_.get());
                rescan("SIGHUP");
            }
            if (fds[2].revents)
                on_uevents();
            if (watchers_)
                watchers_->handle(std::vector<pollfd>(fds.begin() + first_watch_fd, fds.end()));
            if (polling && clock::now() >= next_poll) {
                publish(state_.poll_extents(), "extent poll");
                next_poll = clock::now() + std::chrono::milliseconds(opt_.extent_poll_ms);
            }
        } catch (const std::exception& e) {
            log::error("event loop: {}", e.what());
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
    // Listen before the first scan, so that no event between the scan and
    // the start of the loop is lost (it waits in the socket).
    if (opt_.uevents != UeventSource::none) {
        auto mon = UeventMonitor::open(opt_.uevents);
        if (!mon)
            log::warning("{}; hotplug will need SIGHUP", mon.error().message);
        else
            uevents_.emplace(std::move(*mon));
    }
    if (auto rec = recover_mount_point(opt_.mount_point); !rec) {
        log::error("{}", rec.error().message);
        return 1;
    }
    if (auto abs = real_host_os().real_path(opt_.mount_point)) // mountinfo has absolute paths
        opt_.mount_point = *abs;
    auto nodes =
        NodeDir::mount(opt_.nodes_dir.empty() ? opt_.mount_point + ".nodes" : opt_.nodes_dir);
    if (!nodes) {
        log::error("{}", nodes.error().message);
        return 1;
    }
    nodes_.emplace(std::move(*nodes));
    tree_ = std::make_unique<TagTree>(nodes_->path());
    rescan("start");

    context_.tree = tree_.get();
    auto mount = FuseMount::mount(opt_.mount_point, *options, &context_);
    if (!mount) {
        log::error("{}", mount.error().message);
        return 1;
    }
    se_ = mount->session();
    std::string socket_path =
        opt_.socket_path.empty() ? opt_.mount_point + ".sock" : opt_.socket_path;
    auto stats = [this] {
        const auto& c = context_.counters;
        return nlohmann::json{{"tags", tree_->tag_count()},
                              {"requests",
                               {{"lookup", c.lookup.load()},
                                {"getattr", c.getattr.load()},
                                {"readlink", c.readlink.load()},
                                {"opendir", c.opendir.load()},
                                {"readdir", c.readdir.load()},
                                {"open", c.open.load()},
                                {"read", c.read.load()},
                                {"statfs", c.statfs.load()},
                                {"refused", c.refused.load()}}}}
            .dump();
    };
    auto server = WatchServer::listen(socket_path, tree_.get(), opt_.mount_point, stats);
    if (!server) {
        log::error("{}", server.error().message);
        return 1;
    }
    watchers_.emplace(std::move(*server));
    log::info("mounted {} tags on {} ({}); events from {}, watch socket {}", tree_->tag_count(),
              opt_.mount_point, *options, uevents_ ? uevents_->source_name() : "nowhere",
              socket_path);

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

    // Only the FUSE workers and the main thread take signals; the event
    // thread must never be interrupted inside libdaxctl.
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    std::thread events([this] { event_loop(); });
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
    events.join();
    se_ = nullptr;
    watchers_.reset();
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
