// SPDX-License-Identifier: Apache-2.0
// tagmemfs's reading of device events (fs/uevent_plan.cpp), the events as
// the Debian 6.12 guest kernel sent them (docs/vm.md): which dax devices are
// read again, and which events make a full scan.
#include "uevent_plan.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace tagmem {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr const char* kFwCfgPath = "/sys/devices/pci0000:00/QEMU0002:00";

Uevent fw_cfg(const char* action, const char* driver = "") {
    return {action, "platform", "QEMU0002:00", kFwCfgPath, driver};
}

UeventPlan plan(const std::vector<Uevent>& events) {
    std::set<std::string> awaiting;
    return plan_uevents(events, awaiting);
}

TEST(UeventPlan, TheFwCfgDriversBindRescansOnce) {
    // What `modprobe qemu_fw_cfg` sent, in order (the ksets below by_name
    // come with subsystems named after their parent: by_name, etc, opt).
    auto p =
        plan({{"add", "wakeup", "wakeup6", "/sys/devices/LNXSYSTM:00/wakeup/wakeup6", ""},
              {"add", "by_name", "opt", "/sys/firmware/qemu_fw_cfg/by_name/opt", ""},
              {"add", "opt", "org.tagmem", "/sys/firmware/qemu_fw_cfg/by_name/opt/org.tagmem", ""},
              fw_cfg("bind", "fw_cfg"),
              {"add", "drivers", "fw_cfg", "/sys/bus/platform/drivers/fw_cfg", ""},
              {"add", "module", "qemu_fw_cfg", "/sys/module/qemu_fw_cfg", ""},
              fw_cfg("bind", "fw_cfg")});
    EXPECT_TRUE(p.rescan);
    EXPECT_THAT(p.devices, IsEmpty());
    EXPECT_THAT(p.parents, IsEmpty()); // none of the others is an nd/cxl object
    EXPECT_THAT(p.added, IsEmpty());
}

TEST(UeventPlan, OtherPlatformEventsAndTheUnbindChangeNothing) {
    // Whatever else a platform device does, and fw_cfg going away (its
    // unbind carries no driver; the item read stands, see HostState).
    for (const auto& ev : std::vector<Uevent>{
             {"bind", "platform", "serial8250", "/sys/devices/platform/serial8250", "serial8250"},
             {"bind", "platform", "hmem.0", "/sys/devices/platform/hmem.0", "hmem"},
             {"add", "platform", "fw_cfg", "/sys/devices/platform/fw_cfg", ""},
             {"change", "platform", "QEMU0002:00", kFwCfgPath, ""},
             fw_cfg("unbind"),
             fw_cfg("remove"),
             fw_cfg("add"),
             // A driver of that name elsewhere is not QEMU's fw_cfg.
             {"bind", "nd", "region0", "/sys/devices/ndbus0/region0", "fw_cfg"},
             {"bind", "dax", "dax0.0", "/sys/devices/dax0.0", "fw_cfg"},
             {"bind", "platform", "QEMU0002:00", kFwCfgPath, "fw_cfg2"},
             {"bind", "platform", "QEMU0002:00", kFwCfgPath, "FW_CFG"},
             {"bind", "Platform", "QEMU0002:00", kFwCfgPath, "fw_cfg"},
             {"unbind", "platform", "QEMU0002:00", kFwCfgPath, "fw_cfg"},
         }) {
        auto p = plan({ev});
        EXPECT_FALSE(p.rescan) << ev.action << " " << ev.subsystem << " " << ev.driver;
        if (ev.subsystem != "nd" && ev.subsystem != "dax") {
            EXPECT_THAT(p.devices, IsEmpty());
            EXPECT_THAT(p.parents, IsEmpty()) << ev.subsystem;
        }
    }
}

TEST(UeventPlan, AFloodOfPlatformEventsIsNothingToDo) {
    std::vector<Uevent> flood;
    for (int i = 0; i < 10000; ++i)
        flood.push_back({i % 2 ? "bind" : "unbind", "platform", "dev" + std::to_string(i),
                         "/sys/devices/platform/dev" + std::to_string(i), i % 2 ? "other" : ""});
    std::set<std::string> awaiting{"dax0.0"};
    auto p = plan_uevents(flood, awaiting);
    EXPECT_FALSE(p.rescan);
    EXPECT_THAT(p.devices, IsEmpty());
    EXPECT_THAT(p.parents, IsEmpty());
    EXPECT_THAT(awaiting, ElementsAre("dax0.0")); // untouched
}

TEST(UeventPlan, DaxAndRegionEventsAsBefore) {
    std::set<std::string> awaiting;
    auto p = plan_uevents({{"add", "dax", "dax0.0", "/sys/devices/x/dax0.0", ""},
                           {"change", "dax", "dax0.0", "/sys/devices/x/dax0.0", ""},
                           {"change", "dax", "dax1.0", "/sys/devices/x/dax1.0", ""},
                           {"add", "nd", "region0", "/sys/devices/ndbus0/region0", ""},
                           {"change", "cxl", "region1", "/sys/devices/cxl/region1", ""}},
                          awaiting);
    EXPECT_FALSE(p.rescan);
    EXPECT_THAT(p.added, ElementsAre("dax0.0"));
    EXPECT_THAT(p.devices, ElementsAre("dax1.0")); // dax0.0 waits for its bind
    EXPECT_THAT(awaiting, ElementsAre("dax0.0"));
    EXPECT_THAT(p.parents, ElementsAre("/sys/devices/cxl/region1", "/sys/devices/ndbus0/region0"));
    p = plan_uevents({{"bind", "dax", "dax0.0", "/sys/devices/x/dax0.0", "device_dax"}}, awaiting);
    EXPECT_THAT(p.devices, ElementsAre("dax0.0"));
    EXPECT_THAT(awaiting, IsEmpty());
}

TEST(UeventPlan, ABatchWithTheBindAndDaxEventsRescansAndKeepsTrack) {
    // dax_hmem and qemu_fw_cfg loaded at once: the full scan reads the
    // devices; one added here still waits for its bind.
    std::set<std::string> awaiting;
    auto p = plan_uevents(
        {{"add", "dax", "dax0.0", "/sys/devices/x/dax0.0", ""}, fw_cfg("bind", "fw_cfg")},
        awaiting);
    EXPECT_TRUE(p.rescan);
    EXPECT_THAT(awaiting, ElementsAre("dax0.0"));
}

} // namespace
} // namespace tagmem
