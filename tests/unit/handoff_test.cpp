// SPDX-License-Identifier: Apache-2.0
// The VM hand-off's fw_cfg item (core/handoff.hpp): parsing, good and bad,
// and what a guest's scan makes of it (core/host_state.cpp).
#include "handoff.hpp"

#include "fake_host_os.hpp"
#include "host_state.hpp"
#include "json_output.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>

namespace tagmem {
namespace {

using fake::DaxSpec;
using fake::FakeHostOs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using json = nlohmann::json;

constexpr const char* kA = "aaaaaaaa-0000-4000-8000-00000000000a";
constexpr const char* kB = "bbbbbbbb-0000-4000-8000-00000000000b";
constexpr const char* kC = "cccccccc-0000-4000-8000-00000000000c";
constexpr std::uint64_t MiB = 1ull << 20;
constexpr std::uint64_t G4 = 4ull << 30;

Uuid U(const char* s) {
    return *Uuid::parse(s);
}

json entry(const char* tag, std::uint64_t start, std::uint64_t size, int node) {
    return {{"tag", tag},
            {"name", std::string("pool-") + tag[0]},
            {"shareable", true},
            {"size", size},
            {"guest_start", start},
            {"guest_node", node},
            {"host",
             {{"device", "dax3.0"},
              {"numa_node", 2},
              {"source", "nvdimm"},
              {"performance", {{"read_latency_ns", 250}, {"read_bandwidth_mbps", 9000}}}}}};
}

json item(json tags) {
    return {{"format", "tagmem-handoff"}, {"version", 1}, {"tags", std::move(tags)}};
}

json two_tags() {
    return item({entry(kA, G4, 128 * MiB, 1), entry(kB, G4 + 128 * MiB, 64 * MiB, 2)});
}

std::string text_error(std::string_view text) {
    auto h = parse_handoff(text);
    EXPECT_FALSE(h) << std::string(text);
    if (h)
        return "";
    EXPECT_EQ(h.error().code, EINVAL);
    EXPECT_THAT(h.error().message, HasSubstr("fw_cfg opt/org.tagmem/tags: "));
    return h.error().message;
}

std::string parse_error(const json& j) {
    return text_error(j.dump());
}

// --- parsing -------------------------------------------------------------

TEST(HandoffParse, ReadsEveryField) {
    auto h = parse_handoff(two_tags().dump());
    ASSERT_TRUE(h) << h.error().message;
    ASSERT_THAT(h->entries, SizeIs(2));
    const HandoffEntry& a = h->entries[0];
    EXPECT_EQ(a.tag, U(kA));
    EXPECT_EQ(a.name, "pool-a");
    EXPECT_TRUE(a.shareable);
    EXPECT_EQ(a.size, 128 * MiB);
    EXPECT_EQ(a.guest_start, G4);
    EXPECT_EQ(a.guest_node, 1);
    EXPECT_EQ(a.host_device, "dax3.0");
    EXPECT_EQ(a.host_numa_node, 2);
    EXPECT_EQ(a.host_source, "nvdimm");
    EXPECT_EQ(a.host_performance.read_latency_ns, 250u);
    EXPECT_EQ(a.host_performance.read_bandwidth_mbps, 9000u);
    EXPECT_FALSE(a.host_performance.write_latency_ns);
    EXPECT_EQ(a.range(), (PhysRange{G4, G4 + 128 * MiB - 1}));
}

TEST(HandoffParse, HostPartAndUnknownKeysAreOptional) {
    json j = item({{{"tag", kA},
                    {"name", ""},
                    {"shareable", false},
                    {"size", 2 * MiB},
                    {"guest_start", G4},
                    {"guest_node", 1},
                    {"future", {{"x", 1}}}}});
    j["future_top"] = "ignored";
    auto h = parse_handoff(j.dump());
    ASSERT_TRUE(h) << h.error().message;
    EXPECT_EQ(h->entries[0].name, "");
    EXPECT_FALSE(h->entries[0].shareable);
    EXPECT_TRUE(h->entries[0].host_performance.empty());
    EXPECT_FALSE(h->entries[0].host_numa_node);
}

TEST(HandoffParse, AnEmptyListAndQemusTrailingNulAreFine) {
    auto h = parse_handoff(item(json::array()).dump() + std::string(1, '\0'));
    ASSERT_TRUE(h) << h.error().message;
    EXPECT_THAT(h->entries, IsEmpty());
}

TEST(HandoffParse, RefusesWhatIsNotTheFormat) {
    EXPECT_THAT(text_error("{\"format\": \"tagmem-handoff\", "), HasSubstr("not valid JSON"));
    EXPECT_THAT(text_error(""), HasSubstr("not valid JSON"));
    EXPECT_THAT(text_error("[1]"), HasSubstr("not a JSON object"));
    json j = two_tags();
    j["format"] = "other";
    EXPECT_THAT(parse_error(j), HasSubstr("\"format\" is not \"tagmem-handoff\""));
    j.erase("format");
    EXPECT_THAT(parse_error(j), HasSubstr("\"format\""));
    j = two_tags();
    j["version"] = 2;
    EXPECT_THAT(parse_error(j), HasSubstr("\"version\" 2 is not supported"));
    j["version"] = "1";
    EXPECT_THAT(parse_error(j), HasSubstr("is not supported"));
    j.erase("version");
    EXPECT_THAT(parse_error(j), HasSubstr("\"version\" missing"));
    j = two_tags();
    j["tags"] = json::object();
    EXPECT_THAT(parse_error(j), HasSubstr("\"tags\" must be an array"));
}

TEST(HandoffParse, RefusesBadUuids) {
    for (const char* bad :
         {"not-a-uuid", "AAAAAAAA-0000-4000-8000-00000000000A",
          "00000000-0000-0000-0000-000000000000", "aaaaaaaa-0000-4000-8000-00000000000g"}) {
        json j = item({entry(kA, G4, 2 * MiB, 1)});
        j["tags"][0]["tag"] = bad;
        EXPECT_THAT(parse_error(j), HasSubstr("tags[0]: \"tag\"")) << bad;
    }
    json j = item({entry(kA, G4, 2 * MiB, 1)});
    j["tags"][0]["tag"] = 7;
    EXPECT_THAT(parse_error(j), HasSubstr("\"tag\" must be a string"));
}

TEST(HandoffParse, RefusesMissingAndMistypedFields) {
    struct Case {
        const char* key;
        json value; // null: the key is removed
        const char* says;
    } cases[] = {
        {"name", nullptr, "\"name\" is missing"},
        {"name", 3, "\"name\" must be a string"},
        {"shareable", nullptr, "\"shareable\" must be true or false"},
        {"shareable", "yes", "\"shareable\" must be true or false"},
        {"size", nullptr, "\"size\" is missing"},
        {"size", -2097152, "\"size\" must be an integer >= 0"},
        {"size", 2.5e6, "\"size\" must be an integer >= 0"},
        {"size", "2097152", "\"size\" must be an integer >= 0"},
        {"size", 0, "\"size\" is 0"},
        {"size", 3 * MiB, "multiples of 2 MiB"},
        {"guest_start", nullptr, "\"guest_start\" is missing"},
        {"guest_start", G4 + 4096, "multiples of 2 MiB"},
        {"guest_start", 0xffffffffffe00000ull, "beyond the address space"},
        {"guest_node", nullptr, "\"guest_node\" is missing"},
        {"guest_node", -1, "\"guest_node\" must be an integer >= 0"},
        {"guest_node", 1 << 20, "\"guest_node\" above"},
        {"host", "dax0.0", "\"host\" must be an object"},
    };
    for (const auto& c : cases) {
        json j = item({entry(kA, G4, 2 * MiB, 1)});
        if (c.value.is_null())
            j["tags"][0].erase(c.key);
        else
            j["tags"][0][c.key] = c.value;
        EXPECT_THAT(parse_error(j), HasSubstr(c.says)) << c.key << " = " << c.value;
    }
    json j = item({entry(kA, G4, 2 * MiB, 1)});
    j["tags"][0]["host"]["performance"]["write_latency_ns"] = "fast";
    EXPECT_THAT(parse_error(j), HasSubstr("\"write_latency_ns\" must be an integer >= 0"));
    j = item({entry(kA, G4, 2 * MiB, 1)});
    j["tags"][0]["host"]["numa_node"] = "2";
    EXPECT_THAT(parse_error(j), HasSubstr("\"numa_node\" must be an integer"));
    j = item({entry(kA, G4, 2 * MiB, 1)});
    j["tags"][0]["host"]["performance"] = 5;
    EXPECT_THAT(parse_error(j), HasSubstr("\"performance\" must be an object"));
    EXPECT_THAT(parse_error(item({5})), HasSubstr("tags[0]: not an object"));
}

TEST(HandoffParse, RefusesDuplicatesAndOverlaps) {
    EXPECT_THAT(parse_error(item({entry(kA, G4, 2 * MiB, 1), entry(kA, G4 + 2 * MiB, 2 * MiB, 2)})),
                HasSubstr("tags[1]: tag aaaaaaaa-0000-4000-8000-00000000000a is listed twice"));
    EXPECT_THAT(parse_error(item({entry(kA, G4, 2 * MiB, 1), entry(kB, G4 + 2 * MiB, 2 * MiB, 1)})),
                HasSubstr("guest node 1 is given to another tag too"));
    // kB starts inside kA (listed in reverse address order on purpose).
    std::string msg = parse_error(item({
        entry(kB, G4 + 2 * MiB, 4 * MiB, 2),
        entry(kA, G4, 4 * MiB, 1),
    }));
    EXPECT_THAT(msg,
                HasSubstr("the ranges of tags " + std::string(kA) + " and " + kB + " overlap"));
    // Addresses are root-only: messages never carry them.
    EXPECT_THAT(msg, ::testing::Not(HasSubstr("0x100000000")));
    EXPECT_THAT(msg, ::testing::Not(HasSubstr("4294967296")));
    // Touching is fine.
    EXPECT_TRUE(parse_handoff(
        item({entry(kA, G4, 2 * MiB, 1), entry(kB, G4 + 2 * MiB, 2 * MiB, 2)}).dump()));
}

TEST(HandoffParse, RefusesOversizedAndDeepItems) {
    json j = two_tags();
    j["padding"] = std::string(kHandoffMaxBytes, 'x');
    EXPECT_THAT(parse_error(j), HasSubstr("more than the 65536 allowed"));
    std::string deep = "{\"format\": \"tagmem-handoff\", \"version\": 1, \"tags\": [], \"x\": " +
                       std::string(5000, '[') + std::string(5000, ']') + "}";
    EXPECT_THAT(text_error(deep), HasSubstr("nested deeper than"));
    // Brackets inside strings do not count.
    json s = two_tags();
    s["tags"][0]["name"] = std::string(100, '[') + "\\\"" + std::string(100, '{');
    EXPECT_TRUE(parse_handoff(s.dump()));
}

// --- matching ------------------------------------------------------------

TEST(HandoffMatch, ExactRangeAndTargetNode) {
    auto h = parse_handoff(two_tags().dump());
    ASSERT_TRUE(h);
    DaxDevice d;
    d.target_node = 1;
    d.ranges = {PhysRange{G4, G4 + 128 * MiB - 1}};
    ASSERT_NE(h->match(d), nullptr);
    EXPECT_EQ(h->match(d)->tag, U(kA));
    d.target_node = 2; // right range, wrong node
    EXPECT_EQ(h->match(d), nullptr);
    d.target_node = 1;
    d.ranges = {PhysRange{G4, G4 + 126 * MiB - 1}}; // shorter
    EXPECT_EQ(h->match(d), nullptr);
    d.ranges = {PhysRange{G4, G4 + 64 * MiB - 1}, PhysRange{G4 + 64 * MiB, G4 + 128 * MiB - 1}};
    EXPECT_EQ(h->match(d), nullptr); // not one range
    d.ranges = {};
    EXPECT_EQ(h->match(d), nullptr);
}

// --- a guest's scan ----------------------------------------------------------

class HandoffScan : public ::testing::Test {
  protected:
    FakeHostOs os;
    HostState state{os};

    DaxDevice hmem(int region, std::uint64_t start, std::uint64_t size, int node,
                   DevMode mode = DevMode::disabled) {
        return os.add_hmem_device(
            DaxSpec{}.at(region, 0).range(start, size).nodes(node, 0).in_mode(mode));
    }
    ScanResult scan(const Config& config = {}) {
        auto delta = state.rescan(config);
        EXPECT_TRUE(delta) << (delta ? "" : delta.error().message);
        return state.snapshot();
    }
    std::vector<std::string> rejected_reasons(const ScanResult& s) {
        std::vector<std::string> out;
        for (const auto& r : s.rejected)
            out.push_back(r.device + ": " + r.reason);
        return out;
    }
};

TEST_F(HandoffScan, MatchedDisabledDevicesAreEnabledAndTagged) {
    hmem(0, G4, 128 * MiB, 1);
    hmem(1, G4 + 128 * MiB, 64 * MiB, 2);
    hmem(2, G4 + 192 * MiB, 2 * MiB, 3); // not handed over: never touched
    os.add_file(kHandoffPath, two_tags().dump());
    ScanResult s = scan();
    EXPECT_THAT(os.enabled(), ElementsAre("dax0.0", "dax1.0"));
    ASSERT_THAT(s.tags, SizeIs(2));
    const TagRecord* a = s.find(U(kA));
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->state, TagState::ready) << a->reason;
    EXPECT_EQ(a->source, TagSource::handoff);
    EXPECT_EQ(a->name.str(), "pool-a");
    EXPECT_TRUE(a->shareable);
    EXPECT_EQ(a->shareable_from, ShareableFrom::handoff);
    EXPECT_EQ(a->device()->dev.name, "dax0.0");
    EXPECT_EQ(a->device()->dev.mode, DevMode::devdax);
    EXPECT_EQ(a->device()->performance->read_latency_ns, 250u);
    ASSERT_THAT(s.untagged, SizeIs(1));
    EXPECT_EQ(s.untagged[0].device, "dax2.0");
    EXPECT_EQ(s.untagged[0].mode, DevMode::disabled);
    EXPECT_THAT(s.rejected, IsEmpty());

    json meta = tag_to_json(*a, false);
    EXPECT_EQ(meta["source"], "handoff");
    EXPECT_EQ(meta["shareable_from"], "handoff");
    const json& dev = meta["devices"][0];
    EXPECT_EQ(dev["performance"], (json{{"read_latency_ns", 250}, {"read_bandwidth_mbps", 9000}}));
    EXPECT_EQ(dev["performance_source"], (json{{"read_latency_ns", "host via fw_cfg"},
                                               {"read_bandwidth_mbps", "host via fw_cfg"}}));
    EXPECT_EQ(dev["handoff"]["host"],
              (json{{"device", "dax3.0"}, {"source", "nvdimm"}, {"numa_node", 2}}));
    EXPECT_EQ(dev["handoff"]["guest_node"], 1);
    EXPECT_FALSE(dev.contains("ranges")); // physical addresses: root only
    EXPECT_EQ(meta.dump().find("4294967296"), std::string::npos);
    EXPECT_TRUE(tag_to_json(*a, true)["devices"][0].contains("ranges"));

    // Enabled once: a rescan does not ask again (the device is enabled now,
    // and an admin who disables it later is obeyed).
    scan();
    EXPECT_THAT(os.enabled(), SizeIs(2));
}

TEST_F(HandoffScan, GuestHmatFillsWhatTheHostDidNotSay) {
    hmem(0, G4, 128 * MiB, 1, DevMode::devdax);
    Performance guest;
    guest.read_latency_ns = 999; // the host's value wins
    guest.write_latency_ns = 300;
    os.set_node_performance(1, guest);
    os.add_file(kHandoffPath, item({entry(kA, G4, 128 * MiB, 1)}).dump());
    ScanResult s = scan();
    EXPECT_THAT(os.enabled(), IsEmpty()); // already devdax
    const TagRecord* a = s.find(U(kA));
    ASSERT_NE(a, nullptr);
    json dev = tag_to_json(*a, false)["devices"][0];
    EXPECT_EQ(dev["performance"]["read_latency_ns"], 250);
    EXPECT_EQ(dev["performance"]["write_latency_ns"], 300);
    EXPECT_EQ(dev["performance_source"]["read_latency_ns"], "host via fw_cfg");
    EXPECT_EQ(dev["performance_source"]["write_latency_ns"], "HMAT access0");
}

TEST_F(HandoffScan, AFailedEnableShowsTheTagNotReadyWithTheReason) {
    hmem(0, G4, 128 * MiB, 1);
    os.fail_enable(EBUSY);
    os.add_file(kHandoffPath, item({entry(kA, G4, 128 * MiB, 1)}).dump());
    ScanResult s = scan();
    const TagRecord* a = s.find(U(kA));
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->state, TagState::disabled);
    EXPECT_THAT(a->reason, HasSubstr("enabling it as devdax failed"));
    EXPECT_THAT(a->reason, HasSubstr("injected failure"));
    EXPECT_EQ(a->name.str(), "pool-a");
}

// Issue 19: a transient failure to bind device_dax is tried again.
TEST_F(HandoffScan, ATransientEnableFailureIsRetried) {
    hmem(0, G4, 128 * MiB, 1);
    os.fail_enable(EBUSY);
    os.add_file(kHandoffPath, item({entry(kA, G4, 128 * MiB, 1)}).dump());
    ScanResult s = scan();
    EXPECT_EQ(s.find(U(kA))->state, TagState::disabled);
    EXPECT_TRUE(state.needs_retry());
    os.fail_enable(0);
    state.retry();
    EXPECT_THAT(os.enabled(), ElementsAre("dax0.0", "dax0.0"));
    const ScanResult after = state.snapshot();
    ASSERT_NE(after.find(U(kA)), nullptr);
    EXPECT_EQ(after.find(U(kA))->state, TagState::ready) << after.find(U(kA))->reason;
    EXPECT_FALSE(state.needs_retry());
    // A lasting refusal (not transient) is the device's answer: no retry.
    hmem(1, G4 + 128 * MiB, 64 * MiB, 2);
    os.fail_enable(EINVAL);
    os.add_file(kHandoffPath, two_tags().dump());
    scan();
    EXPECT_FALSE(state.needs_retry());
}

// Issue 19: a device the administrator put online with `tagmem online` is
// not bound to device_dax again, not even by a daemon started afresh while
// it is between drivers (or left disabled).
TEST_F(HandoffScan, AnExplicitOnlineIsNotUndoneByARestartedDaemon) {
    hmem(0, G4, 128 * MiB, 1);
    os.add_dir("/run");
    ASSERT_TRUE(mark_explicit_online(U(kA), os));
    os.add_file(kHandoffPath, item({entry(kA, G4, 128 * MiB, 1)}).dump());
    ScanResult s = scan();
    EXPECT_THAT(os.enabled(), IsEmpty());
    ASSERT_NE(s.find(U(kA)), nullptr);
    EXPECT_EQ(s.find(U(kA))->state, TagState::disabled);
    EXPECT_THAT(s.find(U(kA))->reason, HasSubstr("tagmem online made tag"));
    // `tagmem offline` clears the mark; the next daemon enables it.
    ASSERT_TRUE(clear_explicit_online(U(kA), os));
    EXPECT_FALSE(os.exists(kExplicitOnlineDir));
    HostState restarted{os};
    ASSERT_TRUE(restarted.rescan({}));
    EXPECT_THAT(os.enabled(), ElementsAre("dax0.0"));
    // A mark that cannot be read (EMFILE) enables nothing now, and is retried.
    hmem(1, G4 + 128 * MiB, 64 * MiB, 2);
    os.add_file(kHandoffPath, two_tags().dump());
    os.fail_calls(fake::op_stat, EMFILE, kExplicitOnlineDir);
    HostState third{os};
    ASSERT_TRUE(third.rescan({}));
    EXPECT_THAT(os.enabled(), ElementsAre("dax0.0"));
    EXPECT_TRUE(third.needs_retry());
    os.heal();
    third.retry();
    EXPECT_THAT(os.enabled(), ElementsAre("dax0.0", "dax1.0"));
}

TEST_F(HandoffScan, AMalformedItemIsRefusedAndTouchesNothingElse) {
    hmem(0, G4, 128 * MiB, 1);
    DaxDevice nv = os.add_nvdimm_device(DaxSpec{}.at(5, 0).range(0x240000000, 256 * MiB), kC,
                                        "00000000-0000-0000-0000-000000000000");
    (void)nv;
    json j = two_tags();
    j["tags"][1]["tag"] = "not-a-uuid";
    os.add_file(kHandoffPath, j.dump());
    ScanResult s = scan();
    EXPECT_THAT(os.enabled(), IsEmpty()); // no opt-in from a refused item
    ASSERT_THAT(s.tags, SizeIs(1));
    EXPECT_EQ(s.tags[0].tag, U(kC));
    EXPECT_THAT(rejected_reasons(s),
                ElementsAre(::testing::StartsWith(
                    "fw_cfg opt/org.tagmem/tags: tags[1]: \"tag\": not a UUID")));
    ASSERT_THAT(s.untagged, SizeIs(1));
    EXPECT_EQ(s.untagged[0].device, "dax0.0");

    // Fixed (a new guest boot, say): the tag appears, the other stays.
    os.add_file(kHandoffPath, item({entry(kA, G4, 128 * MiB, 1)}).dump());
    s = scan();
    EXPECT_THAT(s.tags, SizeIs(2));
    EXPECT_THAT(s.rejected, IsEmpty());
}

TEST_F(HandoffScan, ADeviceAddedAfterTheScanIsFoundByItsAddEvent) {
    // dax_hmem loaded after tagmemfs's first scan: the item was read, the
    // devices come later, disabled, and no bind event will follow.
    os.add_file(kHandoffPath, two_tags().dump());
    ScanResult before = scan();
    EXPECT_THAT(before.tags, IsEmpty());
    hmem(0, G4, 128 * MiB, 1);
    hmem(2, G4 + 192 * MiB, 2 * MiB, 3); // not handed over
    EXPECT_THAT(state.handed_over({"dax0.0", "dax2.0", "dax9.9"}), ElementsAre("dax0.0"));
    EXPECT_THAT(os.enabled(), IsEmpty()); // asking enables nothing
    auto delta = state.refresh({"dax0.0"});
    EXPECT_THAT(os.enabled(), ElementsAre("dax0.0"));
    const ScanResult after = state.snapshot(); // a copy: keep it alive while `a` points in
    const TagRecord* a = after.find(U(kA));
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->state, TagState::ready) << a->reason;
}

TEST_F(HandoffScan, WithoutAnItemAddedDevicesAreNotEvenRead) {
    scan();
    hmem(0, G4, 128 * MiB, 1);
    const auto reads_before = os.reads().size();
    EXPECT_THAT(state.handed_over({"dax0.0"}), IsEmpty());
    EXPECT_EQ(os.reads().size(), reads_before); // no sysfs read at all
}

TEST_F(HandoffScan, NoItemNoChange) {
    hmem(0, G4, 128 * MiB, 1);
    ScanResult s = scan();
    EXPECT_THAT(s.tags, IsEmpty());
    EXPECT_THAT(s.rejected, IsEmpty());
    EXPECT_THAT(os.enabled(), IsEmpty());
}

TEST_F(HandoffScan, AnEntryWithoutItsDeviceIsReportedAndOthersMismatchNothing) {
    hmem(0, G4, 128 * MiB, 5);            // right range, other node
    hmem(1, G4 + 128 * MiB, 32 * MiB, 2); // right node, other size
    os.add_file(kHandoffPath, two_tags().dump());
    ScanResult s = scan();
    EXPECT_THAT(s.tags, IsEmpty());
    EXPECT_THAT(os.enabled(), IsEmpty());
    EXPECT_THAT(rejected_reasons(s),
                ElementsAre(HasSubstr("tag " + std::string(kA) + ": no dax device"),
                            HasSubstr("tag " + std::string(kB) + ": no dax device")));
}

TEST_F(HandoffScan, TransientReadKeepsWhatWasKnown) {
    hmem(0, G4, 128 * MiB, 1);
    os.add_file(kHandoffPath, item({entry(kA, G4, 128 * MiB, 1)}).dump());
    ASSERT_THAT(scan().tags, SizeIs(1));
    os.fail(kHandoffPath, EMFILE);
    auto delta = state.rescan({});
    ASSERT_TRUE(delta);
    EXPECT_THAT(delta->removals, IsEmpty());
    EXPECT_THAT(state.snapshot().tags, SizeIs(1));
    EXPECT_TRUE(state.needs_rescan());
}

TEST_F(HandoffScan, TheItemIsReadWhenTheFwCfgDriverComes) {
    // `modprobe qemu_fw_cfg` after the first scan: the device is there,
    // disabled, and nothing names it yet; the driver's bind makes the
    // daemon scan again (fs/uevent_plan.hpp), which reads the item.
    hmem(0, G4, 128 * MiB, 1);
    EXPECT_EQ(read_handoff(os).error().code, ENODEV); // no by_name: not bound
    ScanResult s = scan();
    EXPECT_THAT(s.tags, IsEmpty());
    EXPECT_THAT(s.rejected, IsEmpty()); // not knowing is no error
    EXPECT_THAT(os.enabled(), IsEmpty());
    os.add_file(kHandoffPath, item({entry(kA, G4, 128 * MiB, 1)}).dump());
    s = scan();
    ASSERT_THAT(s.tags, SizeIs(1));
    EXPECT_EQ(s.tags[0].tag, U(kA));
    EXPECT_EQ(s.tags[0].state, TagState::ready) << s.tags[0].reason;
    EXPECT_THAT(os.enabled(), ElementsAre("dax0.0"));
}

TEST_F(HandoffScan, TheItemReadStandsWhenTheFwCfgDriverGoes) {
    hmem(0, G4, 128 * MiB, 1);
    os.add_file(kHandoffPath, item({entry(kA, G4, 128 * MiB, 1)}).dump());
    ASSERT_THAT(scan().tags, SizeIs(1));
    // Unbound or unloaded: by_name goes with every item (a rescan comes
    // from SIGHUP or another event): the item cannot have changed, the tag
    // stays, and nothing is said about it.
    os.remove(kFwCfgByName);
    auto delta = state.rescan({});
    ASSERT_TRUE(delta) << delta.error().message;
    EXPECT_THAT(delta->removals, IsEmpty());
    ScanResult s = state.snapshot();
    ASSERT_THAT(s.tags, SizeIs(1));
    EXPECT_EQ(s.tags[0].source, TagSource::handoff);
    EXPECT_THAT(s.rejected, IsEmpty());
    EXPECT_FALSE(state.needs_rescan());
    EXPECT_THAT(os.enabled(), ElementsAre("dax0.0")); // once, as before
}

TEST_F(HandoffScan, ABoundDriverWithoutTheItemMeansNoHandoff) {
    // The driver lists the guest's items and this is not among them: the
    // host handed nothing (read as such, even after an item was read).
    hmem(0, G4, 128 * MiB, 1);
    os.add_file(std::string(kFwCfgByName) + "/etc/acpi/raw", "x");
    auto h = read_handoff(os);
    ASSERT_TRUE(h) << h.error().message;
    EXPECT_THAT(h->entries, IsEmpty());
    os.add_file(kHandoffPath, item({entry(kA, G4, 128 * MiB, 1)}).dump());
    ASSERT_THAT(scan().tags, SizeIs(1));
    os.remove(std::string(kFwCfgByName) + "/opt");
    ScanResult s = scan();
    EXPECT_THAT(s.tags, IsEmpty());
    ASSERT_THAT(s.untagged, SizeIs(1));
    EXPECT_EQ(s.untagged[0].device, "dax0.0");
}

TEST_F(HandoffScan, AFailedLookOfTheDriverIsRetried) {
    hmem(0, G4, 128 * MiB, 1);
    os.fail(kFwCfgByName, EMFILE);
    auto delta = state.rescan({});
    ASSERT_TRUE(delta);
    EXPECT_TRUE(state.needs_rescan()); // not taken for "not bound"
    EXPECT_THAT(state.snapshot().tags, IsEmpty());
}

TEST_F(HandoffScan, ADevicesOwnTagWinsOverTheHandoff) {
    DaxDevice nv = os.add_nvdimm_device(DaxSpec{}.at(0, 0).range(G4, 128 * MiB).nodes(1, 0), kC,
                                        "00000000-0000-0000-0000-000000000000");
    (void)nv;
    os.add_file(kHandoffPath, item({entry(kA, G4, 128 * MiB, 1)}).dump());
    ScanResult s = scan();
    ASSERT_THAT(s.tags, SizeIs(1));
    EXPECT_EQ(s.tags[0].tag, U(kC));
    EXPECT_EQ(s.tags[0].source, TagSource::nvdimm);
    EXPECT_THAT(s.tags[0].device()->notes->warnings,
                ElementsAre(HasSubstr("carries tag " + std::string(kC) + " of its own")));
}

TEST_F(HandoffScan, TheHandoffWinsOverTagmemConfMatchRange) {
    hmem(0, G4, 128 * MiB, 1);
    Config config = parse_config(fmt::format("[tag {}]\nname = local\nshareable = no\n"
                                             "match-range = {:#x}-{:#x}\nmode = 0640\n",
                                             kB, G4, G4 + 128 * MiB - 1),
                                 "test.conf");
    ASSERT_THAT(config.errors, IsEmpty());
    os.add_file(kHandoffPath, item({entry(kA, G4, 128 * MiB, 1)}).dump());
    ScanResult s = scan(config);
    ASSERT_THAT(s.tags, SizeIs(1));
    EXPECT_EQ(s.tags[0].tag, U(kA));
    EXPECT_THAT(
        s.tags[0].device()->notes->warnings,
        ElementsAre(HasSubstr("tagmem.conf matches this memory to tag " + std::string(kB))));
    // The same tag in tagmem.conf: the host's name and flag, the guest's access.
    Config same = parse_config(
        fmt::format("[tag {}]\nname = local\nshareable = no\nmode = 0640\n", kA), "test.conf");
    s = scan(same);
    ASSERT_THAT(s.tags, SizeIs(1));
    EXPECT_EQ(s.tags[0].name.str(), "pool-a");
    EXPECT_TRUE(s.tags[0].shareable);
    EXPECT_EQ(s.tags[0].access.mode, 0640u);
}

} // namespace
} // namespace tagmem
