// SPDX-License-Identifier: Apache-2.0
// tagmemfs(8): mounts the tag namespace (default /run/tagmem).
#include "daemon.hpp"

#include "config.hpp"
#include "tagmem/version.hpp"

#include <CLI/CLI.hpp>

#include <cstdio>

int main(int argc, char** argv) {
    using namespace tagmem;
    DaemonOptions opt;
    std::string level = "info";
    CLI::App app{"tagmemfs: a read-only FUSE filesystem with one directory per memory tag; "
                 "each tag's `data` opens and maps its devdax device directly"};
    app.set_version_flag("-V,--version", std::string("tagmemfs ") + kVersion);
    app.add_option("mountpoint", opt.mount_point, "where to mount")->capture_default_str();
    app.add_flag("-f,--foreground", opt.foreground, "stay in the foreground (for systemd)");
    app.add_option("-c,--config", opt.config_path,
                   fmt::format("configuration file (default {}, optional)", kDefaultConfigPath));
    app.add_option("-o", opt.mount_options,
                   "extra mount options: noexec, noatime, nodiratime, relatime, sync, async "
                   "(dev, nosuid, ro, allow_other, default_permissions are always applied)")
        ->allow_extra_args(false); // each -o takes one argument, never the mount point
    app.add_option("-l,--log-level", level, "error, warning, info or debug")
        ->capture_default_str()
        ->check(CLI::IsMember({"error", "warning", "info", "debug"}));
    app.add_option("-t,--threads", opt.threads, "maximum FUSE worker threads (0: libfuse default)")
        ->capture_default_str();
    app.add_option("-s,--socket", opt.socket_path,
                   "the watch/wait socket (default: <mountpoint>.sock)");
    app.add_option("--nodes-dir", opt.nodes_dir,
                   "where the device nodes behind each data link live, on a read-only tmpfs "
                   "(default: <mountpoint>.nodes)");
    std::string uevents = "auto";
    app.add_option("--uevents", uevents,
                   "device events from: auto (udev if udevd runs, else kernel), udev, kernel, "
                   "none")
        ->capture_default_str()
        ->check(CLI::IsMember({"auto", "udev", "kernel", "none"}));
    app.add_option("--extent-poll-ms", opt.extent_poll_ms,
                   "how often DCD extent lists are re-read (they raise no event); 0: never")
        ->capture_default_str();
    auto* cdi_dir =
        app.add_option("--cdi-dir", opt.cdi_dir,
                       "where to keep the CDI specs of the usable tags (tagmem-<uuid>.json) "
                       "for container engines, one tagmemfs per directory; empty: none")
            ->capture_default_str();
    bool no_cdi = false;
    app.add_flag("--no-cdi", no_cdi, "write no CDI spec (same as an empty --cdi-dir)")
        ->excludes(cdi_dir);
    // The watch socket is open to every local user: what each may cost.
    auto& w = opt.watch;
    app.add_option("--watch-max-clients", w.max_clients,
                   "watch socket: most connections of non-root users in total")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--watch-max-clients-per-uid", w.max_clients_per_uid,
                   "watch socket: most connections of one non-root user")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--watch-max-root-clients", w.max_root_clients,
                   "watch socket: most connections of root (a budget of its own)")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--watch-idle-timeout-ms", w.idle_timeout_ms,
                   "watch socket: time to send the request, and to read a last reply")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--watch-max-queue", w.max_queue,
                   "watch socket: bytes queued for one watcher before it is dropped")
        ->capture_default_str()
        ->check(CLI::Range(std::size_t{4096}, std::size_t{1} << 40));
    app.add_option("--watch-max-queue-total", w.max_queue_total,
                   "watch socket: bytes queued for all clients; the largest queues are dropped "
                   "first")
        ->capture_default_str()
        ->check(CLI::Range(std::size_t{4096}, std::size_t{1} << 40));
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        app.exit(e);
        return 2;
    }
    opt.log_level = *log::parse_level(level);
    if (no_cdi)
        opt.cdi_dir.clear();
    opt.uevents = uevents == "udev"     ? UeventSource::udev
                  : uevents == "kernel" ? UeventSource::kernel
                  : uevents == "none"   ? UeventSource::none
                                        : UeventSource::automatic;
    try {
        return run_daemon(opt);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tagmemfs: internal error: %s\n", e.what());
        return 1;
    }
}
