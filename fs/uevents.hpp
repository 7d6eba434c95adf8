// SPDX-License-Identifier: Apache-2.0
// Device events of the dax, nd, cxl and platform subsystems (the last for
// the QEMU fw_cfg device's bind, fs/uevent_plan.hpp), through libudev. From
// udevd when it runs, so that /dev nodes and their udev permissions exist
// before a tag appears; else straight from the kernel (VMs and containers
// without udevd, where devtmpfs made the node before the event was sent).
#pragma once

#include "result.hpp"

#include <memory>
#include <string>
#include <utility>
#include <vector>

struct udev;
struct udev_monitor;

namespace tagmem {

enum class UeventSource { automatic, udev, kernel, none };

struct Uevent {
    std::string action;    // add, remove, change, bind, unbind, ...
    std::string subsystem; // dax, nd, cxl, platform
    std::string sysname;   // dax0.1, namespace0.0, ...
    std::string syspath;   // /sys/devices/...
    std::string driver;    // the DRIVER of a bind event (empty at unbind)
};

class UeventMonitor {
  public:
    static Result<UeventMonitor> open(UeventSource source);
    UeventMonitor(UeventMonitor&&) noexcept;
    ~UeventMonitor();

    int fd() const;
    const char* source_name() const { return source_; }
    // Everything pending, without blocking.
    std::vector<Uevent> drain();
    // Whether events were lost since the last call: the socket overflowed
    // (ENOBUFS), so some device changed unseen and only a full rescan
    // catches up.
    bool take_lost() { return std::exchange(lost_, false); }

  private:
    UeventMonitor(udev* u, udev_monitor* m, const char* source)
        : udev_(u), mon_(m), source_(source) {}
    udev* udev_ = nullptr;
    udev_monitor* mon_ = nullptr;
    const char* source_ = "none";
    bool lost_ = false;
};

} // namespace tagmem
