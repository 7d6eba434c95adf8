// SPDX-License-Identifier: Apache-2.0
#include "uevents.hpp"

#include <fmt/format.h>
#include <libudev.h>

#include <unistd.h>

#include <cerrno>

#include <utility>

namespace tagmem {

Result<UeventMonitor> UeventMonitor::open(UeventSource source) {
    if (source == UeventSource::automatic)
        source =
            ::access("/run/udev/control", F_OK) == 0 ? UeventSource::udev : UeventSource::kernel;
    const char* name = source == UeventSource::udev ? "udev" : "kernel";
    udev* u = udev_new();
    if (!u)
        return make_error(ENOMEM, "libudev: udev_new failed");
    udev_monitor* m = udev_monitor_new_from_netlink(u, name);
    if (!m) {
        udev_unref(u);
        return make_error(EIO, fmt::format("libudev: cannot listen to {} events", name));
    }
    UeventMonitor mon(u, m, name);
    // platform: for the QEMU fw_cfg device's bind (fs/uevent_plan.hpp). Its
    // other events are few (devices of the board, at boot and at module
    // loads) and each is dropped by plan_uevents.
    for (const char* subsystem : {"dax", "nd", "cxl", "platform"})
        udev_monitor_filter_add_match_subsystem_devtype(m, subsystem, nullptr);
    // A burst of thousands of events must not overflow the socket.
    udev_monitor_set_receive_buffer_size(m, 64 << 20);
    if (int rc = udev_monitor_enable_receiving(m); rc < 0)
        return make_error(-rc, fmt::format("libudev: cannot receive {} events", name));
    return mon;
}

UeventMonitor::UeventMonitor(UeventMonitor&& o) noexcept
    : udev_(std::exchange(o.udev_, nullptr)), mon_(std::exchange(o.mon_, nullptr)),
      source_(o.source_) {}

UeventMonitor::~UeventMonitor() {
    if (mon_)
        udev_monitor_unref(mon_);
    if (udev_)
        udev_unref(udev_);
}

int UeventMonitor::fd() const {
    return udev_monitor_get_fd(mon_);
}

std::vector<Uevent> UeventMonitor::drain() {
    std::vector<Uevent> out;
    // The monitor socket is non-blocking: receive until it is empty
    // (EAGAIN). An overflow (ENOBUFS: the kernel dropped events) is reported
    // once by recvmsg, and the events queued after it are still there to
    // read. Any other failure (EMFILE, ENOMEM while libudev builds the
    // device) has consumed an event it could not deliver: lost as well.
    for (int failures = 0;;) {
        errno = 0;
        udev_device* d = udev_monitor_receive_device(mon_);
        if (!d) {
            const int err = errno;
            if (err == EINTR)
                continue;
            if (err == 0 || err == EAGAIN || err == EWOULDBLOCK)
                break;
            lost_ = true;
            // Bounded: a socket that overflows faster than it is read, or a
            // failure that lasts, must not hold the event thread here; the
            // rescan catches up.
            if (++failures < 16)
                continue;
            break;
        }
        auto str = [](const char* s) { return std::string(s ? s : ""); };
        std::string action = str(udev_device_get_action(d));
        // The driver as the event names it (DRIVER=), which only a bind
        // carries; asked of nothing else (libudev would look in sysfs).
        std::string driver = action == "bind" ? str(udev_device_get_driver(d)) : "";
        out.push_back({std::move(action), str(udev_device_get_subsystem(d)),
                       str(udev_device_get_sysname(d)), str(udev_device_get_syspath(d)),
                       std::move(driver)});
        udev_device_unref(d);
    }
    return out;
}

} // namespace tagmem
