// SPDX-License-Identifier: Apache-2.0
// The opt-in to system RAM: every decision of decide_memory_change(), the
// search for the device's users in /proc, and the reading of memory blocks.
#include "online.hpp"

#include "config.hpp"
#include "fake_host_os.hpp"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

namespace tagmem {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using Verdict = MemoryDecision::Verdict;

constexpr const char* kA = "6f1c2d3e-0000-4000-8000-00000000000a";
const DevNumber kDevno{252, 7};

Uuid tag_a() {
    return Uuid::parse(kA).value();
}

Config config_of(const std::string& body) {
    return parse_config(std::string("[tag ") + kA + "]\n" + body, "/etc/tagmem/tagmem.conf");
}

TagRecord record(DevMode mode, bool shareable = false, TagState state = TagState::ready) {
    TagRecord r;
    r.tag = tag_a();
    r.shareable = shareable;
    r.state = state;
    auto p = std::make_shared<ProbedDevice>();
    p->dev.name = "dax0.1";
    p->dev.mode = mode;
    p->dev.devno = kDevno;
    r.devices.push_back(p);
    return r;
}

const std::vector<DeviceUser> kNobody;

MemoryDecision decide(MemoryChange c, const TagRecord* r, const Config& config,
                      const std::vector<DeviceUser>& users = kNobody) {
    return decide_memory_change(c, tag_a(), r, config, users);
}

// --- decide_memory_change --------------------------------------------------

TEST(DecideMemoryChange, AllowedDevdaxTagGoesOnline) {
    auto r = record(DevMode::devdax);
    auto d = decide(MemoryChange::online, &r, config_of("online = allow\n"));
    EXPECT_EQ(d.verdict, Verdict::proceed) << d.message;
    EXPECT_EQ(d.refusal, Refusal::none);
}

TEST(DecideMemoryChange, DeniedByDefaultAndByDeny) {
    auto r = record(DevMode::devdax);
    for (const char* body : {"name = x\n", "online = deny\n"}) {
        auto d = decide(MemoryChange::online, &r, config_of(body));
        EXPECT_EQ(d.verdict, Verdict::refuse) << body;
        EXPECT_EQ(d.refusal, Refusal::not_allowed) << body;
        EXPECT_THAT(d.message, HasSubstr("'online = allow'")) << body;
    }
    // No section at all, and no configuration at all.
    Config empty;
    empty.origin = "/etc/tagmem/tagmem.conf";
    auto d = decide(MemoryChange::online, &r, empty);
    EXPECT_EQ(d.refusal, Refusal::not_allowed);
    // Offline takes the same opt-in.
    auto ram = record(DevMode::system_ram, false, TagState::system_ram);
    EXPECT_EQ(decide(MemoryChange::offline, &ram, empty).refusal, Refusal::not_allowed);
}

TEST(DecideMemoryChange, ShareableNeedsTheSecondSetting) {
    auto r = record(DevMode::devdax, /*shareable=*/true);
    auto d = decide(MemoryChange::online, &r, config_of("shareable = yes\nonline = allow\n"));
    EXPECT_EQ(d.verdict, Verdict::refuse);
    EXPECT_EQ(d.refusal, Refusal::not_allowed);
    EXPECT_THAT(d.message, AllOf(HasSubstr("shareable"), HasSubstr("online-shareable = allow")));
    d = decide(MemoryChange::online, &r,
               config_of("shareable = yes\nonline = allow\nonline-shareable = deny\n"));
    EXPECT_EQ(d.refusal, Refusal::not_allowed);
    d = decide(MemoryChange::online, &r,
               config_of("shareable = yes\nonline = allow\nonline-shareable = allow\n"));
    EXPECT_EQ(d.verdict, Verdict::proceed) << d.message;
}

TEST(DecideMemoryChange, InUseIsRefusedAndTheUsersNamed) {
    auto r = record(DevMode::devdax);
    std::vector<DeviceUser> users{{41, "daxmap", "mapping 7f00-7f20"}, {42, "", "fd 3"}};
    auto d = decide(MemoryChange::online, &r, config_of("online = allow\n"), users);
    EXPECT_EQ(d.verdict, Verdict::refuse);
    EXPECT_EQ(d.refusal, Refusal::in_use);
    EXPECT_THAT(d.message, AllOf(HasSubstr("pid 41 (daxmap) mapping 7f00-7f20"),
                                 HasSubstr("pid 42 (?) fd 3")));
}

TEST(DecideMemoryChange, OptInDoesNotOverrideAnyOtherRefusal) {
    const Config allowed = config_of("online = allow\n");
    auto d = decide(MemoryChange::online, nullptr, allowed);
    EXPECT_EQ(d.refusal, Refusal::unknown_tag);

    auto conflict = record(DevMode::devdax, false, TagState::conflict);
    conflict.devices.push_back(conflict.devices[0]);
    conflict.reason = "dax0.1 and dax1.1 claim it";
    d = decide(MemoryChange::online, &conflict, allowed);
    EXPECT_EQ(d.refusal, Refusal::conflict);
    EXPECT_THAT(d.message, HasSubstr("dax0.1 and dax1.1"));
    EXPECT_EQ(decide(MemoryChange::offline, &conflict, allowed).refusal, Refusal::conflict);

    auto disabled = record(DevMode::disabled, false, TagState::disabled);
    EXPECT_EQ(decide(MemoryChange::online, &disabled, allowed).refusal, Refusal::not_ready);
    EXPECT_EQ(decide(MemoryChange::offline, &disabled, allowed).refusal, Refusal::not_ready);

    TagRecord offered;
    offered.tag = tag_a();
    offered.state = TagState::offered;
    d = decide(MemoryChange::online, &offered, allowed);
    EXPECT_EQ(d.refusal, Refusal::not_ready);
    EXPECT_THAT(d.message, HasSubstr("offered"));
}

TEST(DecideMemoryChange, AConfigurationWithAnyErrorDecidesNothing) {
    auto r = record(DevMode::devdax);
    // The tag's own section is fine; another one is not.
    auto config = parse_config(std::string("[tag ") + kA +
                                   "]\nonline = allow\n[tag 6f1c2d3e-0000-4000-8000-00000000000b]"
                                   "\nonline = maybe\n",
                               "f.conf");
    ASSERT_EQ(config.errors.size(), 1u);
    auto d = decide(MemoryChange::online, &r, config);
    EXPECT_EQ(d.refusal, Refusal::config_invalid);
    EXPECT_THAT(d.message, AllOf(HasSubstr("f.conf has errors"), HasSubstr("f.conf:4")));
    // Before anything else, even an unknown tag.
    EXPECT_EQ(decide(MemoryChange::offline, nullptr, config).refusal, Refusal::config_invalid);
}

TEST(DecideMemoryChange, AlreadyThereIsNothingToDo) {
    const Config allowed = config_of("online = allow\n");
    auto ram = record(DevMode::system_ram, false, TagState::system_ram);
    auto d = decide(MemoryChange::online, &ram, allowed);
    EXPECT_EQ(d.verdict, Verdict::nothing_to_do);
    EXPECT_THAT(d.message, HasSubstr("already system RAM"));
    EXPECT_EQ(decide(MemoryChange::offline, &ram, allowed).verdict, Verdict::proceed);

    auto dax = record(DevMode::devdax);
    d = decide(MemoryChange::offline, &dax, allowed);
    EXPECT_EQ(d.verdict, Verdict::nothing_to_do);
    EXPECT_THAT(d.message, HasSubstr("already devdax"));
    // Users of a system-ram device do not exist (it has no character
    // device); the list is not consulted for offline.
    std::vector<DeviceUser> users{{1, "x", "fd 1"}};
    EXPECT_EQ(decide(MemoryChange::offline, &ram, allowed, users).verdict, Verdict::proceed);
}

// --- find_device_users -------------------------------------------------------

// The default deadline of a scan in these tests: never reached.
Result<std::vector<DeviceUser>> find_device_users(DevNumber rdev, HostOs& os) {
    return tagmem::find_device_users(rdev, os,
                                     std::chrono::steady_clock::now() + std::chrono::hours(1));
}

constexpr const char* kInitPidNs = "pid:[4026531836]";

struct Proc : ::testing::Test {
    fake::FakeHostOs os;
    void SetUp() override {
        os.add_symlink("/proc/self/ns/pid", kInitPidNs);
        os.add_char_device("/dev/dax0.1", 252, 7);
        os.add_char_device("/dev/dax0.2", 252, 8);
        os.add_char_device("/run/tagmem.nodes/" + std::string(kA), 252, 7);
        os.add_file("/dev/null-ish", "");
        add_process(1, "init");
        os.add_dir("/proc/self"); // not a number: no process of its own
        os.add_file("/proc/meminfo", "");
    }
    void add_process(int pid, const std::string& comm) {
        const std::string dir = "/proc/" + std::to_string(pid);
        os.add_file(dir + "/comm", comm + "\n");
        os.add_dir(dir + "/fd");
        os.add_dir(dir + "/fdinfo");
        os.add_dir(dir + "/map_files");
    }
    // Descriptor n of pid leads to target; flags as fdinfo shows them
    // (octal; 02 is O_RDWR, 010000000 O_PATH).
    void add_fd(int pid, int n, const std::string& target, const char* flags = "02") {
        const std::string dir = "/proc/" + std::to_string(pid);
        os.add_symlink(dir + "/fd/" + std::to_string(n), target);
        os.add_file(dir + "/fdinfo/" + std::to_string(n),
                    fmt::format("pos:\t0\nflags:\t{}\nmnt_id:\t25\nino:\t7\n", flags));
    }
};

TEST_F(Proc, NobodyUsesIt) {
    add_process(20, "other");
    add_fd(20, 0, "/dev/dax0.2"); // another device
    add_fd(20, 1, "/dev/null-ish");
    os.add_symlink("/proc/20/map_files/7f00-7f20", "/dev/dax0.2");
    auto users = find_device_users(kDevno, os);
    ASSERT_TRUE(users) << users.error().message;
    EXPECT_THAT(*users, IsEmpty());
}

TEST_F(Proc, OpenThroughAnyNodeOfItsNumber) {
    add_process(20, "opener");
    add_process(31, "tagmem-user");
    add_fd(20, 3, "/dev/dax0.1");
    add_fd(31, 5, "/run/tagmem.nodes/" + std::string(kA), "0100000");
    auto users = find_device_users(kDevno, os);
    ASSERT_TRUE(users) << users.error().message;
    EXPECT_THAT(*users, ElementsAre(DeviceUser{20, "opener", "fd 3"},
                                    DeviceUser{31, "tagmem-user", "fd 5"}));
}

TEST_F(Proc, MappedAfterTheDescriptorWasClosed) {
    add_process(7, "daxmap");
    os.add_symlink("/proc/7/map_files/7f0000000000-7f0000200000",
                   "/run/tagmem.nodes/" + std::string(kA));
    auto users = find_device_users(kDevno, os);
    ASSERT_TRUE(users) << users.error().message;
    EXPECT_THAT(*users, ElementsAre(DeviceUser{7, "daxmap", "mapping 7f0000000000-7f0000200000"}));
}

TEST_F(Proc, AProcessThatExitsMeanwhileIsNoUser) {
    add_process(20, "gone");
    add_fd(20, 3, "/dev/dax0.1");
    os.fail("/proc/20/fd", ENOENT);
    add_process(21, "closing");
    add_fd(21, 4, "/dev/dax0.1");
    os.fail("/proc/21/fd/4", ENOENT);
    auto users = find_device_users(kDevno, os);
    ASSERT_TRUE(users) << users.error().message;
    EXPECT_THAT(*users, IsEmpty());
}

TEST_F(Proc, AProcessThatCannotBeInspectedFailsTheWhole) {
    add_process(20, "secret");
    os.add_symlink("/proc/20/map_files/7f00-7f20", "/dev/dax0.1");
    os.fail("/proc/20/map_files/7f00-7f20", EPERM);
    auto users = find_device_users(kDevno, os);
    ASSERT_FALSE(users);
    EXPECT_EQ(users.error().code, EPERM);
    EXPECT_THAT(users.error().message, HasSubstr("pid 20"));

    os.heal();
    os.fail("/proc/20/fd", EACCES);
    users = find_device_users(kDevno, os);
    ASSERT_FALSE(users);
    EXPECT_EQ(users.error().code, EACCES);

    os.heal();
    os.fail("/proc", EMFILE);
    EXPECT_FALSE(find_device_users(kDevno, os));
}

// Issue 19: what a process holds is never stat()ed (a FUSE server behind
// it could hang tagmem in D state); only what the kernel has cached is read.
TEST_F(Proc, NoHeldFileIsStatted) {
    add_process(20, "opener");
    add_fd(20, 3, "/dev/dax0.1");
    add_fd(20, 4, "/dev/null-ish");
    os.add_symlink("/proc/20/map_files/7f00-7f20", "/dev/dax0.1");
    auto users = find_device_users(kDevno, os);
    ASSERT_TRUE(users) << users.error().message;
    EXPECT_THAT(*users, ElementsAre(DeviceUser{20, "opener", "fd 3"},
                                    DeviceUser{20, "opener", "mapping 7f00-7f20"}));
    EXPECT_THAT(os.stats(), IsEmpty());
    EXPECT_THAT(os.cached_stats(), ::testing::Contains("/proc/20/fd/3"));
}

// A user's own FUSE file can claim the device's number, but a char node on
// a nodev mount can only be held O_PATH, which neither reads nor maps: no
// user (and neither is an O_PATH descriptor of the real node).
TEST_F(Proc, APathOnlyDescriptorIsNoUser) {
    add_process(20, "hostile");
    os.add_char_device("/home/u/fuse/fake-dax", 252, 7);
    add_fd(20, 3, "/home/u/fuse/fake-dax", "012000000");
    add_fd(20, 4, "/dev/dax0.1", "010000000");
    auto users = find_device_users(kDevno, os);
    ASSERT_TRUE(users) << users.error().message;
    EXPECT_THAT(*users, IsEmpty());
    // fdinfo without flags is not taken for "not O_PATH" nor for "O_PATH".
    os.add_file("/proc/20/fdinfo/4", "pos:\t0\n");
    users = find_device_users(kDevno, os);
    ASSERT_FALSE(users);
    EXPECT_THAT(users.error().message, HasSubstr("pid 20"));
}

// A user's FUSE mount without allow_other answers root's stat with EACCES;
// on a nodev mount (as every user's FUSE mount is) that is no user, for a
// descriptor (its mount by fdinfo's mnt_id) and for a mapping (its device
// by /proc/<pid>/maps). On a mount that allows devices it stays "cannot tell".
TEST_F(Proc, AFileOnANodevMountThatDeniesRootIsNoUser) {
    add_process(20, "sshfs-user");
    os.add_file("/home/u/mnt/f", "");
    add_fd(20, 3, "/home/u/mnt/f");
    os.add_symlink("/proc/20/map_files/7f0000000000-7f0000200000", "/home/u/mnt/f");
    os.fail("/proc/20/fd/3", EACCES);
    os.fail("/proc/20/map_files/7f0000000000-7f0000200000", EACCES);
    os.add_file("/proc/20/maps", "55d0000000-55d0001000 r-xp 00000000 fd:01 12 /usr/bin/x\n"
                                 "7f0000000000-7f0000200000 r--s 00000000 00:2f 2 /home/u/mnt/f\n");
    os.add_file("/proc/20/mountinfo",
                "22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
                "25 22 0:47 / /home/u/mnt rw,nosuid,nodev,relatime shared:2 - fuse.sshfs x rw\n");
    // add_fd's fdinfo says mnt_id 25; the mapping's device is 0:2f = 0:47.
    auto users = find_device_users(kDevno, os);
    ASSERT_TRUE(users) << users.error().message;
    EXPECT_THAT(*users, IsEmpty());
    os.add_file("/proc/20/mountinfo",
                "22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
                "25 22 0:47 / /home/u/mnt rw,nosuid,relatime shared:2 - fuse.root x rw\n");
    users = find_device_users(kDevno, os);
    ASSERT_FALSE(users);
    EXPECT_EQ(users.error().code, EACCES);
}

// A read of /proc that never returns (a stat() through a FUSE server that
// never answers would) ends the scan at its deadline, with an error.
TEST_F(Proc, TheScanEndsAtItsDeadlineWhateverBlocks) {
    // Kept beyond the test: the abandoned scan thread may still use it.
    static auto* hung = new fake::FakeHostOs();
    static std::mutex gate;
    hung->add_symlink("/proc/self/ns/pid", kInitPidNs);
    hung->add_char_device("/dev/dax0.1", 252, 7);
    hung->add_file("/proc/20/comm", "stuck\n");
    hung->add_symlink("/proc/20/fd/3", "/dev/dax0.1");
    hung->add_file("/proc/20/fdinfo/3", "flags:\t02\n");
    hung->add_dir("/proc/20/map_files");
    std::unique_lock closed(gate);
    hung->on_stat_cached([](const std::string&) { std::lock_guard wait_for_it(gate); });
    const auto start = std::chrono::steady_clock::now();
    auto users = find_device_users_within(kDevno, *hung, std::chrono::milliseconds(300));
    const auto took = std::chrono::steady_clock::now() - start;
    ASSERT_FALSE(users);
    EXPECT_EQ(users.error().code, ETIMEDOUT);
    EXPECT_THAT(users.error().message, HasSubstr("did not finish within 300 ms"));
    EXPECT_LT(took, std::chrono::seconds(5));
    closed.unlock(); // the abandoned thread finishes
    // A scan that is only slow stops at the deadline too.
    auto late = tagmem::find_device_users(
        kDevno, *hung, std::chrono::steady_clock::now() - std::chrono::seconds(1));
    ASSERT_FALSE(late);
    EXPECT_EQ(late.error().code, ETIMEDOUT);
    // And one that ends in time answers.
    auto fine = find_device_users_within(kDevno, os, std::chrono::seconds(30));
    ASSERT_TRUE(fine) << fine.error().message;
}

// Issue 19: in a child PID namespace /proc does not show every process
// (even when /proc is that namespace's own, whose pid 1 is its init).
TEST_F(Proc, OutsideTheInitPidNamespaceItRefuses) {
    add_process(20, "opener");
    add_fd(20, 3, "/dev/dax0.1");
    os.add_symlink("/proc/self/ns/pid", "pid:[4026532801]");
    os.add_symlink("/proc/1/ns/pid", "pid:[4026532801]");
    auto users = find_device_users(kDevno, os);
    ASSERT_FALSE(users);
    EXPECT_EQ(users.error().code, kOtherPidNamespace);
    EXPECT_THAT(users.error().message, HasSubstr("PID namespace other than the host's"));
    os.remove("/proc/self/ns/pid");
    users = find_device_users(kDevno, os);
    ASSERT_FALSE(users);
    EXPECT_EQ(users.error().code, kOtherPidNamespace);
}

// --- memory_blocks -----------------------------------------------------------

struct Blocks : ::testing::Test {
    fake::FakeHostOs os;
    static constexpr std::uint64_t kBlock = 128ull << 20;
    void SetUp() override {
        os.add_file("/sys/devices/system/memory/block_size_bytes", "8000000\n");
        os.add_file("/sys/devices/system/memory/auto_online_blocks", "offline\n");
        // Blocks 0..3 are boot memory, 40..43 the device's (phys_index hex).
        for (int i : {0, 1, 2, 3, 40, 41, 42, 43})
            add_block(i, i < 4 || i == 41 ? "online" : "offline", i < 4 ? 0 : 1);
    }
    void add_block(int i, const char* state, int node) {
        const std::string dir = "/sys/devices/system/memory/memory" + std::to_string(i);
        char hex[32];
        std::snprintf(hex, sizeof hex, "%08x\n", i);
        os.add_file(dir + "/phys_index", hex);
        os.add_file(dir + "/state", std::string(state) + "\n");
        os.add_symlink(dir + "/node" + std::to_string(node),
                       "/sys/devices/system/node/node" + std::to_string(node));
    }
};

TEST_F(Blocks, TheDevicesBlocksByStartAddress) {
    os.add_dir("/sys/devices/system/node/node1");
    // A device from 2 MiB into block 40 to the end of block 42: blocks whose
    // start lies inside, as libdaxctl counts them (41 and 42).
    auto b = memory_blocks(40 * kBlock + (2 << 20), 3 * kBlock - (2 << 20), os);
    ASSERT_TRUE(b) << b.error().message;
    EXPECT_EQ(b->block_size, kBlock);
    EXPECT_THAT(*b, ::testing::Field(&MemoryBlocks::blocks,
                                     ElementsAre(MemoryBlock{"memory41", true, 1},
                                                 MemoryBlock{"memory42", false, 1})));
    EXPECT_EQ(b->online_bytes(), kBlock);
    EXPECT_EQ(b->names(true), "memory41");
    EXPECT_EQ(b->names(false), "memory42");
}

TEST_F(Blocks, NoneInRangeAndBadAttributes) {
    auto b = memory_blocks(100 * kBlock, kBlock, os);
    ASSERT_TRUE(b);
    EXPECT_THAT(b->blocks, IsEmpty());
    os.add_file("/sys/devices/system/memory/block_size_bytes", "zz\n");
    EXPECT_FALSE(memory_blocks(0, kBlock, os));
    os.add_file("/sys/devices/system/memory/block_size_bytes", "8000000\n");
    os.add_file("/sys/devices/system/memory/memory41/phys_index", "0x\n");
    EXPECT_FALSE(memory_blocks(40 * kBlock, 4 * kBlock, os));
    os.fail("/sys/devices/system/memory", EMFILE);
    EXPECT_FALSE(memory_blocks(40 * kBlock, 4 * kBlock, os));
}

// --- to_system_ram / to_devdax: the kernel's answers, scripted ---------------

// A device as libdaxctl drives it: each call is logged; the state follows
// the calls unless a test scripts a failure.
struct ScriptedDriver : DaxDriver {
    std::vector<std::string> calls;
    bool ram = false;
    int online = 0, total = 2;
    int fail_online = 0;           // memory_online() returns -fail_online, after onlining partly
    int fail_offline = 0;          // memory_offline() returns -fail_offline
    int zone_movable = 1;          // movable()
    bool udev_onlines_one = false; // a udev rule onlines one block at kmem's bind
    bool is_system_ram() override { return ram; }
    int disable() override {
        calls.push_back("disable");
        ram = false;
        return 0;
    }
    int enable_devdax() override {
        calls.push_back("enable_devdax");
        return 0;
    }
    int enable_ram() override {
        calls.push_back("enable_ram");
        ram = true;
        online = udev_onlines_one ? 1 : 0;
        return 0;
    }
    int memory_online() override {
        calls.push_back("memory_online");
        if (fail_online) {
            online = 1;
            return -fail_online;
        }
        online = total;
        return 0;
    }
    int memory_offline() override {
        calls.push_back("memory_offline");
        if (fail_offline)
            return -fail_offline;
        online = 0;
        return 0;
    }
    int blocks_online() override { return online; }
    int blocks() override { return total; }
    int movable() override { return zone_movable; }
    std::uint64_t start() override { return 0x1040000000; }
    std::uint64_t size() override { return 256ull << 20; }
    std::string said() override { return ""; }
};

struct ToRam : ::testing::Test {
    fake::FakeHostOs os;
    ScriptedDriver dax;
    std::function<Status()> nobody = [] { return Status{Ok{}}; };
    void SetUp() override {
        os.add_file("/sys/devices/system/memory/auto_online_blocks", "offline\n");
        os.add_file("/sys/devices/system/memory/block_size_bytes", "8000000\n");
    }
};

TEST_F(ToRam, AllOnlineAndMovableIsDone) {
    auto done = to_system_ram(dax, "dax0.1", os, nobody);
    ASSERT_TRUE(done) << done.error().message;
    EXPECT_THAT(dax.calls, ElementsAre("disable", "enable_ram", "memory_online"));
}

// Issue 19: a failed online used to leave kmem bound and some blocks online.
TEST_F(ToRam, AFailedOnlineIsUndoneLikeOffline) {
    dax.fail_online = ENOMEM;
    auto done = to_system_ram(dax, "dax0.1", os, nobody);
    ASSERT_FALSE(done);
    EXPECT_EQ(done.error().code, ENOMEM);
    EXPECT_THAT(dax.calls, ElementsAre("disable", "enable_ram", "memory_online", "memory_offline",
                                       "disable", "enable_devdax"));
    EXPECT_THAT(done.error().message,
                AllOf(HasSubstr("onlining its memory blocks"), HasSubstr("devdax again")));
}

// Issue 19: blocks a udev rule onlined to ZONE_NORMAL before tagmem did are
// online, but not movable: that is checked, and undone.
TEST_F(ToRam, BlocksOutsideZoneMovableAreUndone) {
    dax.udev_onlines_one = true;
    dax.zone_movable = 0;
    auto done = to_system_ram(dax, "dax0.1", os, nobody);
    ASSERT_FALSE(done);
    EXPECT_THAT(done.error().message,
                AllOf(HasSubstr("outside ZONE_MOVABLE"), HasSubstr("devdax again")));
    EXPECT_THAT(dax.calls, ElementsAre("disable", "enable_ram", "memory_online", "memory_offline",
                                       "disable", "enable_devdax"));
}

TEST_F(ToRam, AnUndoThatCannotOfflineSaysWhereItStands) {
    dax.fail_online = EIO;
    dax.fail_offline = EBUSY;
    auto done = to_system_ram(dax, "dax0.1", os, nobody);
    ASSERT_FALSE(done);
    EXPECT_THAT(done.error().message,
                AllOf(HasSubstr("undoing it failed"), HasSubstr("stays with kmem")));
    EXPECT_THAT(dax.calls, ElementsAre("disable", "enable_ram", "memory_online", "memory_offline"));
}

// A timed-out second look (after the unbind) binds device_dax again.
TEST_F(ToRam, ATimedOutRecheckRebindsDeviceDax) {
    auto done =
        to_system_ram(dax, "dax0.1", os, [] { return Status{make_error(ETIMEDOUT, "too long")}; });
    ASSERT_FALSE(done);
    EXPECT_EQ(done.error().code, ETIMEDOUT);
    EXPECT_THAT(dax.calls, ElementsAre("disable", "enable_devdax"));
}

} // namespace
} // namespace tagmem
