// SPDX-License-Identifier: Apache-2.0
// The opt-in to system RAM: every decision of decide_memory_change(), the
// search for the device's users in /proc, and the reading of memory blocks.
#include "online.hpp"

#include "config.hpp"
#include "fake_host_os.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
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

struct Proc : ::testing::Test {
    fake::FakeHostOs os;
    void SetUp() override {
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
        os.add_dir(dir + "/map_files");
    }
};

TEST_F(Proc, NobodyUsesIt) {
    add_process(20, "other");
    os.add_symlink("/proc/20/fd/0", "/dev/dax0.2"); // another device
    os.add_symlink("/proc/20/fd/1", "/dev/null-ish");
    os.add_symlink("/proc/20/map_files/7f00-7f20", "/dev/dax0.2");
    auto users = find_device_users(kDevno, os);
    ASSERT_TRUE(users) << users.error().message;
    EXPECT_THAT(*users, IsEmpty());
}

TEST_F(Proc, OpenThroughAnyNodeOfItsNumber) {
    add_process(20, "opener");
    add_process(31, "tagmem-user");
    os.add_symlink("/proc/20/fd/3", "/dev/dax0.1");
    os.add_symlink("/proc/31/fd/5", "/run/tagmem.nodes/" + std::string(kA));
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
    os.add_symlink("/proc/20/fd/3", "/dev/dax0.1");
    os.fail("/proc/20/fd", ENOENT);
    add_process(21, "closing");
    os.add_symlink("/proc/21/fd/4", "/dev/dax0.1");
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

} // namespace
} // namespace tagmem
