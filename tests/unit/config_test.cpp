// SPDX-License-Identifier: Apache-2.0
#include "config.hpp"

#include "account_text.hpp"
#include "fake_host_os.hpp"
#include "host_os.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

namespace tagmem {
namespace {

using ::testing::AllOf;
using ::testing::ContainsRegex;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using ::testing::StartsWith;

constexpr const char* kA = "6f1c2d3e-0000-4000-8000-000000000001";
constexpr const char* kB = "6f1c2d3e-0000-4000-8000-000000000002";
constexpr const char* kC = "6f1c2d3e-0000-4000-8000-000000000003";

Uuid U(const char* text) {
    auto u = Uuid::parse(text);
    EXPECT_TRUE(u.ok()) << text;
    return u.value_or(Uuid());
}

std::vector<Uuid> tags_of(const Config& c) {
    std::vector<Uuid> out;
    for (const auto& [tag, t] : c.tags) {
        EXPECT_EQ(tag, t.tag) << "map key and TagConfig::tag disagree";
        out.push_back(tag);
    }
    return out;
}

std::string joined(const std::vector<std::string>& errors) {
    std::string s;
    for (const auto& e : errors)
        s += e + "\n";
    return s;
}

// --- good files --------------------------------------------------------

TEST(ParseConfig, FullValidFileWithEveryKey) {
    auto c = parse_config(std::string("# tagmem.conf\n"
                                      "[tag ") +
                              kA +
                              "]\n"
                              "name        = scratch-pool\n"
                              "match-range = 0x1040000000-0x107fffffff\n"
                              "match-node  = 2\n"
                              "shareable   = yes\n"
                              "owner       = famfs\n"
                              "group       = famfs-users\n"
                              "mode        = 0660\n",
                          "/etc/tagmem/tagmem.conf");
    EXPECT_THAT(c.errors, IsEmpty()) << joined(c.errors);
    EXPECT_EQ(c.origin, "/etc/tagmem/tagmem.conf");
    ASSERT_THAT(tags_of(c), ElementsAre(U(kA)));
    const TagConfig* t = c.find(U(kA));
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->name, "scratch-pool");
    ASSERT_TRUE(t->match_range.has_value());
    EXPECT_EQ(*t->match_range, (PhysRange{0x1040000000, 0x107fffffff}));
    EXPECT_EQ(t->match_node, 2);
    EXPECT_EQ(t->shareable, true);
    EXPECT_EQ(t->owner, "famfs");
    EXPECT_EQ(t->group, "famfs-users");
    EXPECT_EQ(t->mode, mode_t{0660});
    EXPECT_TRUE(t->has_match());
}

TEST(ParseConfig, MinimalSectionLeavesEverythingUnset) {
    auto c = parse_config(std::string("[tag ") + kA + "]\nname = x\n", "f.conf");
    EXPECT_THAT(c.errors, IsEmpty()) << joined(c.errors);
    const TagConfig* t = c.find(U(kA));
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->name, "x");
    EXPECT_FALSE(t->shareable.has_value());
    EXPECT_FALSE(t->owner.has_value());
    EXPECT_FALSE(t->group.has_value());
    EXPECT_FALSE(t->mode.has_value());
    EXPECT_FALSE(t->match_range.has_value());
    EXPECT_FALSE(t->match_node.has_value());
    EXPECT_FALSE(t->has_match());
    EXPECT_EQ(c.find(U(kB)), nullptr);
}

TEST(ParseConfig, EmptyAndCommentOnlyTextsAreEmptyConfigs) {
    for (const char* text : {"", "\n\n", "# only a comment\n", "; another\n  # indented\n"}) {
        auto c = parse_config(text, "f.conf");
        EXPECT_THAT(c.errors, IsEmpty()) << "'" << text << "': " << joined(c.errors);
        EXPECT_THAT(c.tags, IsEmpty()) << text;
    }
}

TEST(ParseConfig, CommentsAndBlankLinesAnywhere) {
    auto c = parse_config(std::string("# leading comment\n"
                                      "; semicolon comment\n"
                                      "\n"
                                      "[tag ") +
                              kA +
                              "]\n"
                              "# inside a section\n"
                              "\n"
                              "name = a#not-a-comment\n"
                              "; between keys\n"
                              "shareable = no\n"
                              "\n"
                              "[tag " +
                              kB +
                              "]\n"
                              "match-node = 0\n"
                              "# trailing comment",
                          "f.conf");
    EXPECT_THAT(c.errors, IsEmpty()) << joined(c.errors);
    ASSERT_THAT(tags_of(c), ElementsAre(U(kA), U(kB)));
    EXPECT_EQ(c.find(U(kA))->name, "a#not-a-comment");
    EXPECT_EQ(c.find(U(kA))->shareable, false);
    EXPECT_EQ(c.find(U(kB))->match_node, 0);
}

TEST(ParseConfig, SectionUuidInUpperCaseAndPaddedIsCanonicalised) {
    auto c = parse_config("[tag   6F1C2D3E-0000-4000-8000-00000000000A  ]\nname = up\n", "f.conf");
    EXPECT_THAT(c.errors, IsEmpty()) << joined(c.errors);
    ASSERT_THAT(tags_of(c), ElementsAre(U("6f1c2d3e-0000-4000-8000-00000000000a")));
    EXPECT_EQ(c.tags.begin()->second.name, "up");
}

TEST(ParseConfig, BlanksAroundKeysAndValuesAreIgnored) {
    auto c =
        parse_config(std::string("[tag ") + kA + "]\nname=a b\nmode   =   0640   \n", "f.conf");
    EXPECT_THAT(c.errors, IsEmpty()) << joined(c.errors);
    ASSERT_NE(c.find(U(kA)), nullptr);
    EXPECT_EQ(c.find(U(kA))->name, "a b");
    EXPECT_EQ(c.find(U(kA))->mode, mode_t{0640});
}

TEST(ParseConfig, MatchRangeOnly) {
    auto c = parse_config(std::string("[tag ") + kA + "]\nmatch-range = 4096-8191\n", "f.conf");
    EXPECT_THAT(c.errors, IsEmpty()) << joined(c.errors);
    const TagConfig* t = c.find(U(kA));
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->match_range, (PhysRange{4096, 8191}));
    EXPECT_FALSE(t->match_node.has_value());
    EXPECT_TRUE(t->has_match());
}

TEST(ParseConfig, MatchNodeOnlyAndItsLimits) {
    auto c = parse_config(std::string("[tag ") + kA + "]\nmatch-node = 0\n[tag " + kB +
                              "]\nmatch-node = 4095\n",
                          "f.conf");
    EXPECT_THAT(c.errors, IsEmpty()) << joined(c.errors);
    ASSERT_THAT(tags_of(c), ElementsAre(U(kA), U(kB)));
    EXPECT_EQ(c.find(U(kA))->match_node, 0);
    EXPECT_TRUE(c.find(U(kA))->has_match());
    EXPECT_FALSE(c.find(U(kA))->match_range.has_value());
    EXPECT_EQ(c.find(U(kB))->match_node, 4095);
}

TEST(ParseConfig, ShareableSpellings) {
    std::string text;
    const char* values[] = {"yes", "no", "true", "false", "1", "0", "on", "off"};
    const bool want[] = {true, false, true, false, true, false, true, false};
    for (int i = 0; i < 8; ++i)
        text += "[tag 6f1c2d3e-0000-4000-8000-00000000010" + std::to_string(i) +
                "]\nshareable = " + values[i] + "\n";
    auto c = parse_config(text, "f.conf");
    EXPECT_THAT(c.errors, IsEmpty()) << joined(c.errors);
    ASSERT_THAT(c.tags, SizeIs(8));
    int i = 0;
    for (const auto& [tag, t] : c.tags) {
        EXPECT_EQ(t.shareable, want[i]) << values[i];
        ++i;
    }
}

TEST(ParseConfig, CrLfLineEndingsAndNoFinalNewline) {
    auto c = parse_config(std::string("[tag ") + kA + "]\r\nname = crlf\r\nmode = 0640", "f.conf");
    EXPECT_THAT(c.errors, IsEmpty()) << joined(c.errors);
    ASSERT_NE(c.find(U(kA)), nullptr);
    EXPECT_EQ(c.find(U(kA))->name, "crlf");
    EXPECT_EQ(c.find(U(kA))->mode, mode_t{0640});
}

TEST(ParseConfig, LineNumbersCountEveryLine) {
    // The error is on line 7 whatever the mix of comments, blanks and CRLF.
    auto c = parse_config(std::string("# 1\n\r\n; 3\n[tag ") + kA + "]\r\nname = a\n\nmode = 9",
                          "f.conf");
    ASSERT_THAT(c.errors, SizeIs(1));
    EXPECT_THAT(c.errors[0], StartsWith("f.conf:7: "));
}

TEST(ParseConfig, OriginIsUsedInMessages) {
    auto c = parse_config(std::string("[tag ") + kA + "]\nmode = bad\n", "/tmp/other.conf");
    EXPECT_EQ(c.origin, "/tmp/other.conf");
    ASSERT_THAT(c.errors, SizeIs(1));
    EXPECT_THAT(c.errors[0], StartsWith("/tmp/other.conf:2: "));
}

// --- bad values: the section is dropped, the others still apply ----------

struct BadLine {
    const char* what;
    std::string line; // the key = value line, at line 5
    const char* expect;
};

class ConfigBadValue : public ::testing::TestWithParam<BadLine> {};

TEST_P(ConfigBadValue, ReportedWithFileLineAndOnlyItsSectionIsDropped) {
    const auto& p = GetParam();
    std::string text = std::string("[tag ") + kA + "]\n" + // 1
                       "name = good-a\n" +                 // 2
                       "[tag " + kB + "]\n" +              // 3
                       "shareable = yes\n" +               // 4
                       p.line + "\n" +                     // 5
                       "owner = someone\n" +               // 6
                       "[tag " + kC + "]\n" +              // 7
                       "name = good-c\n";                  // 8
    auto c = parse_config(text, "f.conf");
    ASSERT_THAT(c.errors, SizeIs(1)) << p.what << ":\n" << joined(c.errors);
    EXPECT_THAT(c.errors[0], StartsWith("f.conf:5: ")) << p.what;
    EXPECT_THAT(c.errors[0], HasSubstr(p.expect)) << p.what;
    EXPECT_THAT(tags_of(c), ElementsAre(U(kA), U(kC))) << p.what;
    EXPECT_EQ(c.find(U(kA))->name, "good-a");
    EXPECT_EQ(c.find(U(kC))->name, "good-c");
}

INSTANTIATE_TEST_SUITE_P(
    Values, ConfigBadValue,
    ::testing::Values(
        BadLine{"unknown key", "colour = red", "unknown key"},
        BadLine{"key in wrong case", "Name = x", "unknown key"},
        BadLine{"duplicate key", "shareable = no", "'shareable' given twice"},
        BadLine{"mode with non-octal digit", "mode = 0999", "not an octal mode"},
        BadLine{"mode with setuid", "mode = 4755", "setuid"},
        BadLine{"mode with sticky bit", "mode = 1777", "setuid/setgid/sticky"},
        BadLine{"mode as letters", "mode = rw", "not an octal mode"},
        BadLine{"mode as symbolic", "mode = u+rw", "not an octal mode"},
        BadLine{"mode too long", "mode = 00600", "not an octal mode"},
        BadLine{"mode empty", "mode =", "not an octal mode"},
        BadLine{"mode with a # comment", "mode = 0600 # rw", "not an octal mode"},
        BadLine{"range end before start", "match-range = 0x2000-0x1000", "ends before"},
        BadLine{"range without dash", "match-range = 0x1000", "not a range"},
        BadLine{"range with junk end", "match-range = 0x1000-zz", "not a range"},
        BadLine{"range missing start", "match-range = -0x1000", "not a range"},
        BadLine{"range missing end", "match-range = 0x1000-", "not a range"},
        BadLine{"range as size", "match-range = 0x1000+4096", "not a range"},
        BadLine{"negative node", "match-node = -1", "NUMA node number"},
        BadLine{"node too large", "match-node = 4096", "NUMA node number"},
        BadLine{"node not a number", "match-node = two", "NUMA node number"},
        BadLine{"node in hex", "match-node = 0x1", "NUMA node number"},
        BadLine{"node empty", "match-node =", "NUMA node number"},
        BadLine{"empty owner", "owner =", "empty owner"},
        BadLine{"empty group", "group =", "empty group"},
        BadLine{"empty name", "name =", "1 to 128 characters"},
        BadLine{"name with a tab", "name = a\tb", "U+0009"},
        BadLine{"name with an escape sequence", "name = a\x1b[31mred", "control character U+001B"},
        BadLine{"name with DEL", "name = a\x7f", "U+007F"},
        BadLine{"name with a C1 control", "name = a\xc2\x9b", "U+009B"},
        BadLine{"name with a bidi override",
                "name = a\xe2\x80\xae"
                "b",
                "U+202E"},
        BadLine{"name with invalid UTF-8", "name = caf\xe9", "not valid UTF-8"},
        BadLine{"name with an overlong '/'", "name = \xc0\xaf", "not valid UTF-8"},
        BadLine{"name with a surrogate", "name = \xed\xa0\x80", "not valid UTF-8"},
        BadLine{"name cut mid-character", "name = \xe2\x82", "not valid UTF-8"},
        BadLine{"owner with invalid UTF-8", "owner = r\xffot", "not valid UTF-8"},
        BadLine{"owner with an escape", "owner = \x1b]0;x", "U+001B"},
        BadLine{"owner with a colon", "owner = a:b", "':'"},
        BadLine{"owner with a blank", "owner = a b", "blank"},
        BadLine{"owner as an option", "owner = -x", "'-'"},
        BadLine{"owner uid -1", "owner = 4294967295", "out of range"},
        BadLine{"owner uid beyond 32 bits", "owner = 4294967296", "out of range"},
        BadLine{"owner uid beyond 64 bits", "owner = 99999999999999999999999", "out of range"},
        BadLine{"owner uid with a leading zero", "owner = 0100", "leading zero"},
        BadLine{"owner uid negative", "owner = -1", "'-'"},
        BadLine{"group gid -1", "group = 4294967295", "out of range"},
        BadLine{"group with a comma", "group = a,b", "','"}),
    [](const auto& param_info) { return "case" + std::to_string(param_info.index); });

// --- the opt-in to system RAM (docs/online.md) ----------------------------

TEST(ParseConfig, OnlineIsDeniedUnlessAllowed) {
    auto c = parse_config(std::string("[tag ") + kA + "]\nname = a\n[tag " + kB +
                              "]\nonline = deny\n[tag " + kC + "]\nonline = allow\n",
                          "f.conf");
    EXPECT_THAT(c.errors, IsEmpty()) << joined(c.errors);
    ASSERT_THAT(tags_of(c), SizeIs(3));
    EXPECT_FALSE(c.find(U(kA))->online);
    EXPECT_FALSE(c.find(U(kA))->online_shareable);
    EXPECT_FALSE(c.find(U(kB))->online);
    EXPECT_TRUE(c.find(U(kC))->online);
    EXPECT_FALSE(c.find(U(kC))->online_shareable);
}

TEST(ParseConfig, OnlineShareableNeedsOnline) {
    auto c = parse_config(std::string("[tag ") + kA +
                              "]\nshareable = yes\nonline = allow\nonline-shareable = allow\n"
                              "[tag " +
                              kB + "]\nonline-shareable = allow\n[tag " + kC +
                              "]\nonline-shareable = allow\nonline = deny\n",
                          "f.conf");
    ASSERT_THAT(c.errors, SizeIs(2)) << joined(c.errors);
    EXPECT_THAT(c.errors[0], AllOf(StartsWith("f.conf:6: "),
                                   HasSubstr("online-shareable = allow without online = allow")));
    EXPECT_THAT(c.errors[1], StartsWith("f.conf:8: "));
    ASSERT_THAT(tags_of(c), ElementsAre(U(kA)));
    EXPECT_TRUE(c.find(U(kA))->online);
    EXPECT_TRUE(c.find(U(kA))->online_shareable);
}

TEST(ParseConfig, OnlineValuesAreAllowOrDenyOnly) {
    for (const char* value : {"yes", "true", "1", "Allow", "allowed", "", "allow deny"}) {
        auto c = parse_config(std::string("[tag ") + kA + "]\nonline = " + value + "\n", "f.conf");
        ASSERT_THAT(c.errors, SizeIs(1)) << value;
        EXPECT_THAT(c.errors[0],
                    AllOf(StartsWith("f.conf:2: "), HasSubstr("expected allow or deny")))
            << value;
        EXPECT_THAT(tags_of(c), IsEmpty()) << value;
        auto d = parse_config(std::string("[tag ") + kA +
                                  "]\nonline = allow\nonline-shareable = " + value + "\n",
                              "f.conf");
        ASSERT_THAT(d.errors, SizeIs(1)) << value;
        EXPECT_THAT(d.errors[0],
                    AllOf(StartsWith("f.conf:3: "), HasSubstr("expected allow or deny")))
            << value;
        EXPECT_THAT(tags_of(d), IsEmpty()) << value;
    }
}

TEST(ParseConfig, OnlineGivenTwiceIsAnError) {
    auto c =
        parse_config(std::string("[tag ") + kA + "]\nonline = deny\nonline = allow\n", "f.conf");
    ASSERT_THAT(c.errors, SizeIs(1)) << joined(c.errors);
    EXPECT_THAT(c.errors[0], HasSubstr("given twice"));
    EXPECT_THAT(tags_of(c), IsEmpty());
}

// shareable is the section's first key in the table above, so here:
TEST(ParseConfig, BadBoolean) {
    auto c = parse_config(std::string("[tag ") + kA + "]\nshareable = maybe\n[tag " + kB +
                              "]\nshareable = yes\n",
                          "f.conf");
    ASSERT_THAT(c.errors, SizeIs(1)) << joined(c.errors);
    EXPECT_THAT(c.errors[0], AllOf(StartsWith("f.conf:2: "), HasSubstr("shareable = maybe"),
                                   HasSubstr("not a boolean")));
    EXPECT_THAT(tags_of(c), ElementsAre(U(kB)));
}

TEST(ParseConfig, OnlyTheFirstErrorOfABadSectionIsReported) {
    auto c =
        parse_config(std::string("[tag ") + kA + "]\nmode = 0999\nshareable = maybe\n", "f.conf");
    ASSERT_THAT(c.errors, SizeIs(1)) << joined(c.errors);
    EXPECT_THAT(c.errors[0], StartsWith("f.conf:2: "));
    EXPECT_THAT(c.tags, IsEmpty());
}

TEST(ParseConfig, KeyOutsideAnySection) {
    auto c = parse_config(std::string("name = stray\n[tag ") + kA + "]\nname = a\n", "f.conf");
    ASSERT_THAT(c.errors, SizeIs(1)) << joined(c.errors);
    EXPECT_THAT(c.errors[0],
                AllOf(StartsWith("f.conf:1: "), HasSubstr("'name' outside of any [tag <uuid>]")));
    ASSERT_THAT(tags_of(c), ElementsAre(U(kA)));
    EXPECT_EQ(c.find(U(kA))->name, "a");
}

TEST(ParseConfig, EveryKeyOutsideASectionIsReported) {
    auto c = parse_config("# x\nname = stray\nmode = 0600\n", "f.conf");
    ASSERT_THAT(c.errors, SizeIs(2)) << joined(c.errors);
    EXPECT_THAT(c.errors[0], StartsWith("f.conf:2: "));
    EXPECT_THAT(c.errors[1], StartsWith("f.conf:3: "));
    EXPECT_THAT(c.tags, IsEmpty());
}

// Section-level problems. Where the message points (header or first key) is
// checked loosely here and exactly by SectionErrorsPointAtTheHeaderLine.
struct BadSection {
    const char* what;
    std::string header; // at line 5; its first key is at line 6
    const char* expect;
};

class ConfigBadSection : public ::testing::TestWithParam<BadSection> {};

TEST_P(ConfigBadSection, ReportedAndDroppedWhileTheOthersApply) {
    const auto& p = GetParam();
    std::string text = std::string("[tag ") + kA + "]\n" + // 1
                       "name = good-a\n" +                 // 2
                       "[tag " + kB + "]\n" +              // 3
                       "name = good-b\n" +                 // 4
                       p.header + "\n" +                   // 5
                       "name = bad\n" +                    // 6
                       "mode = 0640\n" +                   // 7
                       "[tag " + kC + "]\n" +              // 8
                       "name = good-c\n";                  // 9
    auto c = parse_config(text, "f.conf");
    ASSERT_THAT(c.errors, SizeIs(1)) << p.what << ":\n" << joined(c.errors);
    EXPECT_THAT(c.errors[0], ContainsRegex("^f\\.conf:[56]: ")) << p.what;
    EXPECT_THAT(c.errors[0], HasSubstr(p.expect)) << p.what;
    ASSERT_THAT(tags_of(c), ElementsAre(U(kA), U(kB), U(kC))) << p.what;
    // Nothing of the bad section leaked into the good ones.
    for (const char* good : {kA, kB, kC})
        EXPECT_FALSE(c.find(U(good))->mode.has_value()) << p.what;
    EXPECT_EQ(c.find(U(kA))->name, "good-a");
    EXPECT_EQ(c.find(U(kB))->name, "good-b");
    EXPECT_EQ(c.find(U(kC))->name, "good-c");
}

INSTANTIATE_TEST_SUITE_P(
    Sections, ConfigBadSection,
    ::testing::Values(
        BadSection{"not a uuid", "[tag not-a-uuid]", "not a UUID"},
        BadSection{"truncated uuid", "[tag 6f1c2d3e-0000-4000-8000-00000000000]", "not a UUID"},
        BadSection{"braced uuid", "[tag {6f1c2d3e-0000-4000-8000-000000000002}]", "not a UUID"},
        BadSection{"uuid without dashes", "[tag 6f1c2d3e000040008000000000000002]", "not a UUID"},
        BadSection{"missing uuid", "[tag]", "unknown section"},
        BadSection{"nil uuid", "[tag 00000000-0000-0000-0000-000000000000]", "nil UUID"},
        BadSection{"unknown section", "[global]", "unknown section [global]"},
        BadSection{"upper-case TAG", "[TAG 6f1c2d3e-0000-4000-8000-000000000002]",
                   "unknown section"},
        BadSection{"uuid without tag prefix", "[6f1c2d3e-0000-4000-8000-000000000002]",
                   "unknown section"},
        BadSection{"tab after tag", "[tag\t6f1c2d3e-0000-4000-8000-000000000002]",
                   "unknown section"},
        BadSection{"duplicate of A", std::string("[tag ") + kA + "]", "configured twice"},
        BadSection{"duplicate of A in upper case", "[tag 6F1C2D3E-0000-4000-8000-000000000001]",
                   "configured twice"}),
    [](const auto& param_info) { return "case" + std::to_string(param_info.index); });

TEST(ParseConfig, DuplicateSectionKeepsTheFirstOne) {
    auto c = parse_config(std::string("[tag ") + kA + "]\nname = first\n[tag " + kB +
                              "]\nname = b\n[tag " + kA + "]\nname = second\n",
                          "f.conf");
    ASSERT_THAT(c.errors, SizeIs(1)) << joined(c.errors);
    EXPECT_THAT(c.errors[0], HasSubstr(std::string("tag ") + kA + " is configured twice"));
    ASSERT_THAT(tags_of(c), ElementsAre(U(kA), U(kB)));
    EXPECT_EQ(c.find(U(kA))->name, "first");
}

TEST(ParseConfig, ABadFirstSectionStillCountsAsConfigured) {
    // The first [tag A] is dropped for its bad mode; a second [tag A] is
    // reported as a duplicate rather than silently replacing it.
    auto c = parse_config(std::string("[tag ") + kA + "]\nmode = 9\n[tag " + kB +
                              "]\nname = b\n[tag " + kA + "]\nname = again\n",
                          "f.conf");
    ASSERT_THAT(c.errors, SizeIs(2)) << joined(c.errors);
    EXPECT_THAT(c.errors[0], StartsWith("f.conf:2: "));
    EXPECT_THAT(c.errors[1], HasSubstr("configured twice"));
    EXPECT_THAT(tags_of(c), ElementsAre(U(kB)));
}

// Every section header is noticed where it stands, even one with no keys.
TEST(ParseConfig, AdjacentDuplicateSectionIsReported) {
    auto c = parse_config(
        std::string("[tag ") + kA + "]\nname = first\n[tag " + kA + "]\nmode = 0666\n", "f.conf");
    ASSERT_THAT(c.errors, SizeIs(1)) << "duplicate section merged silently";
    EXPECT_THAT(c.errors[0], AllOf(StartsWith("f.conf:3: "), HasSubstr("configured twice")));
    ASSERT_NE(c.find(U(kA)), nullptr);
    EXPECT_FALSE(c.find(U(kA))->mode.has_value()) << "the duplicate's mode was applied";

    auto again = parse_config(
        std::string("[tag ") + kA + "]\nname = first\n[tag " + kA + "]\nname = second\n", "f.conf");
    ASSERT_THAT(again.errors, SizeIs(1));
    EXPECT_THAT(again.errors[0], HasSubstr("configured twice"));
    ASSERT_NE(again.find(U(kA)), nullptr) << "the first, valid [tag A] was dropped";
    EXPECT_EQ(again.find(U(kA))->name, "first");
}

// Errors about a section name its header line.
TEST(ParseConfig, SectionErrorsPointAtTheHeaderLine) {
    auto bad = parse_config("\n[tag not-a-uuid]\n# comment\n\nname = x\n", "f.conf");
    ASSERT_THAT(bad.errors, SizeIs(1));
    EXPECT_THAT(bad.errors[0], StartsWith("f.conf:2: "));
    auto good = parse_config(std::string("\n[tag ") + kA + "]\n# comment\n\nname = x\n", "f.conf");
    ASSERT_NE(good.find(U(kA)), nullptr);
    EXPECT_EQ(good.find(U(kA))->line, 2);
}

// A malformed header is reported even when no key follows it.
TEST(ParseConfig, EmptyMalformedSectionIsReported) {
    for (const char* header :
         {"[tag not-a-uuid]", "[global]", "[tag 00000000-0000-0000-0000-000000000000]"}) {
        auto c = parse_config(std::string(header) + "\n", "f.conf");
        EXPECT_THAT(c.errors, SizeIs(1)) << header << " was not reported";
    }
}

// Indented keys are keys (inih alone would read continuation lines).
TEST(ParseConfig, IndentedKeysAreKeys) {
    auto c =
        parse_config(std::string("[tag ") + kA + "]\n    name = pool\n    mode = 0640\n", "f.conf");
    EXPECT_THAT(c.errors, IsEmpty()) << joined(c.errors);
    ASSERT_NE(c.find(U(kA)), nullptr);
    EXPECT_EQ(c.find(U(kA))->name, "pool");
    EXPECT_EQ(c.find(U(kA))->mode, mode_t{0640});
}

// inih splits lines longer than its buffer; names are limited to 128
// characters and longer lines are refused for their section alone.
TEST(ParseConfig, LongestAllowedNameIsAccepted) {
    std::string name(128, 'n');
    auto c = parse_config(std::string("[tag ") + kA + "]\nname = " + name + "\n[tag " + kB +
                              "]\nname = b\n",
                          "f.conf");
    EXPECT_THAT(c.errors, IsEmpty()) << joined(c.errors);
    ASSERT_NE(c.find(U(kA)), nullptr);
    EXPECT_EQ(c.find(U(kA))->name, name);
    EXPECT_NE(c.find(U(kB)), nullptr);
}

TEST(ParseConfig, TooLongNameDropsOnlyItsSection) {
    std::string name(129, 'n');
    auto c = parse_config(std::string("[tag ") + kA + "]\nname = " + name + "\n[tag " + kB +
                              "]\nname = b\n",
                          "f.conf");
    // A section error on the right line (whatever its wording), not a
    // "syntax error" on line 3 that throws [tag B] away as well.
    ASSERT_THAT(c.errors, SizeIs(1)) << joined(c.errors);
    EXPECT_THAT(c.errors[0], StartsWith("f.conf:2: "));
    EXPECT_THAT(c.errors[0], ::testing::Not(HasSubstr("syntax error")));
    EXPECT_THAT(tags_of(c), ElementsAre(U(kB)));
}

// --- syntax errors: nothing of the file applies -------------------------

TEST(ParseConfig, SyntaxErrorDropsEveryTagButKeepsEveryError) {
    auto c = parse_config(std::string("[tag ") + kA + "]\n" +    // 1
                              "name = a\n" +                     // 2
                              "this line has no equals sign\n" + // 3
                              "[tag " + kB + "]\n" +             // 4
                              "mode = 0999\n" +                  // 5
                              "[tag " + kC + "]\n" +             // 6
                              "name = c\n",                      // 7
                          "f.conf");
    EXPECT_THAT(c.tags, IsEmpty());
    EXPECT_EQ(c.origin, "f.conf");
    ASSERT_THAT(c.errors, SizeIs(2)) << joined(c.errors);
    // The value error found while reading comes first, the syntax error last.
    EXPECT_THAT(c.errors[0], AllOf(StartsWith("f.conf:5: "), HasSubstr("mode = 0999")));
    EXPECT_THAT(c.errors[1], AllOf(StartsWith("f.conf:3: "), HasSubstr("syntax error")));
}

TEST(ParseConfig, OnlyTheFirstSyntaxErrorIsReported) {
    auto c = parse_config(std::string("[tag ") + kA + "]\nname = a\nbad one\nbad two\n", "f.conf");
    EXPECT_THAT(c.tags, IsEmpty());
    ASSERT_THAT(c.errors, SizeIs(1)) << joined(c.errors);
    EXPECT_THAT(c.errors[0], StartsWith("f.conf:3: syntax error"));
}

class ConfigSyntaxError : public ::testing::TestWithParam<std::string> {};

TEST_P(ConfigSyntaxError, MakesTheWholeFileInvalid) {
    auto c = parse_config(std::string("[tag ") + kA + "]\nname = a\n" + GetParam() + "\n[tag " +
                              kB + "]\nname = b\n",
                          "f.conf");
    EXPECT_THAT(c.tags, IsEmpty()) << "'" << GetParam() << "'";
    ASSERT_THAT(c.errors, SizeIs(1)) << joined(c.errors);
    EXPECT_THAT(c.errors[0], StartsWith("f.conf:3: syntax error")) << "'" << GetParam() << "'";
}

INSTANTIATE_TEST_SUITE_P(Lines, ConfigSyntaxError,
                         ::testing::Values("just words", "[tag unterminated", "name",
                                           "[tag 6f1c2d3e-0000-4000-8000-000000000009"));

TEST(ParseConfig, RefusedValuesAreQuotedWithoutTheirControlCharacters) {
    auto c = parse_config(std::string("[tag ") + kA + "]\nname = x\x1b[2Jy\\z\xff\n", "f.conf");
    ASSERT_THAT(c.errors, SizeIs(1));
    EXPECT_THAT(c.errors[0], HasSubstr("name = x\\x1b[2Jy\\\\z\\xff:"));
    EXPECT_EQ(c.errors[0].find('\x1b'), std::string::npos);
}

TEST(ParseConfig, ANulByteInALineIsAnErrorNotATruncation) {
    std::string text = std::string("[tag ") + kA + "]\nowner = root";
    text += '\0';
    text += "evil\n[tag " + std::string(kB) + "]\nname = b\n";
    auto c = parse_config(text, "f.conf");
    ASSERT_THAT(c.errors, SizeIs(1)) << joined(c.errors);
    EXPECT_THAT(c.errors[0], AllOf(StartsWith("f.conf:2: "), HasSubstr("NUL byte")));
    EXPECT_THAT(tags_of(c), ElementsAre(U(kB)));
}

TEST(ParseConfig, PrintableUnicodeNamesAndOrdinaryAccountsAreAccepted) {
    auto c = parse_config(std::string("[tag ") + kA +
                              "]\nname = Speicher \xc3\xbc\xe2\x82\xac \xf0\x9f\x98\x80\n"
                              "owner = svc-famfs_01\ngroup = 4294967294\n",
                          "f.conf");
    EXPECT_THAT(c.errors, IsEmpty()) << joined(c.errors);
    ASSERT_NE(c.find(U(kA)), nullptr);
    EXPECT_EQ(c.find(U(kA))->group, "4294967294");
}

// --- account_text ------------------------------------------------------

TEST(AccountId, TheWholeRangeButMinusOne) {
    EXPECT_EQ(parse_account_id("0").value(), 0u);
    EXPECT_EQ(parse_account_id("65534").value(), 65534u);
    EXPECT_EQ(parse_account_id("4294967294").value(), 4294967294u);
}

TEST(AccountId, Rejects) {
    for (const char* text :
         {"", "4294967295", "4294967296", "18446744073709551616", "99999999999999999999999999",
          "-1", "+1", " 1", "1 ", "01", "00", "0x10", "1e3", "١"}) {
        auto id = parse_account_id(text);
        ASSERT_FALSE(id.ok()) << "'" << text << "' accepted as " << *id;
        EXPECT_FALSE(id.error().message.empty());
    }
}

TEST(AccountName, LengthAndShape) {
    // Longer than a tagmem.conf line can be, but HostOs is asked by others too.
    EXPECT_TRUE(check_account_name(std::string(256, 'g')).ok());
    EXPECT_FALSE(check_account_name(std::string(257, 'g')).ok());
    EXPECT_FALSE(check_account_name("").ok());
    EXPECT_TRUE(check_account_name("famfs.svc-01_x$").ok());
    EXPECT_TRUE(check_account_name("4294967294").ok());
    EXPECT_FALSE(check_account_name("4294967295").ok());
}

TEST(DisplayText, RefusesEveryControlCharacterAndBadEncoding) {
    for (char c = 1; c < 0x20; ++c)
        EXPECT_FALSE(check_display_text(std::string("a") + c).ok()) << int(c);
    for (std::string bad :
         {std::string(1, '\0'), std::string("\x7f"), std::string("\xc2\x80"),
          std::string("\xc2\x9f"), std::string("\xe2\x80\xa8"), std::string("\xe2\x81\xa6"),
          std::string("\x80"), std::string("\xc3"), std::string("\xc1\xbf"),
          std::string("\xf4\x90\x80\x80"), std::string("\xf8\x88\x80\x80\x80")})
        EXPECT_FALSE(check_display_text("ok" + bad).ok()) << escaped_for_display(bad);
    for (const char* good : {"", "plain", "caf\xc3\xa9", "\xc2\xa0", "\xf4\x8f\xbf\xbf"})
        EXPECT_TRUE(check_display_text(good).ok()) << good;
}

TEST(DisplayText, EscapingShowsWhatWasRefused) {
    EXPECT_EQ(escaped_for_display("a\tb\xff"
                                  "c\\"),
              "a\\x09b\\xffc\\\\");
    EXPECT_EQ(escaped_for_display("caf\xc3\xa9"), "caf\xc3\xa9");
}

// --- parse_mode / parse_phys_range directly ----------------------------

TEST(ParseMode, PermissionBitsOnly) {
    EXPECT_EQ(parse_mode("0600").value(), mode_t{0600});
    EXPECT_EQ(parse_mode("600").value(), mode_t{0600});
    EXPECT_EQ(parse_mode("0").value(), mode_t{0});
    EXPECT_EQ(parse_mode("0000").value(), mode_t{0});
    EXPECT_EQ(parse_mode("0777").value(), mode_t{0777});
    EXPECT_EQ(parse_mode("644\n").value(), mode_t{0644});
}

TEST(ParseMode, Rejects) {
    for (const char* text :
         {"", "0999", "08", "4755", "04755", "1000", "7777", "07777", "rw", "0x1ff", "-600", "+600",
          "06 00", "0o600", "00000", "99999999999999999999", "0600x", "\xd9\xa0"}) {
        auto m = parse_mode(text);
        ASSERT_FALSE(m.ok()) << "'" << text << "' accepted as " << std::oct << *m;
        EXPECT_EQ(m.error().code, EINVAL) << text;
    }
}

TEST(ParsePhysRange, HexDecimalAndSingleByte) {
    EXPECT_EQ(parse_phys_range("0x1040000000-0x107fffffff").value(),
              (PhysRange{0x1040000000, 0x107fffffff}));
    EXPECT_EQ(parse_phys_range("4096-8191\n").value(), (PhysRange{4096, 8191}));
    EXPECT_EQ(parse_phys_range("0x1000-0x1000").value(), (PhysRange{0x1000, 0x1000}));
    EXPECT_EQ(parse_phys_range("0-0xffffffffffffffff").value(), (PhysRange{0, 0xffffffffffffffff}));
}

TEST(ParsePhysRange, Rejects) {
    for (const char* text :
         {"", "-", "0x1000", "0x1000-", "-0x1000", "0x2000-0x1000", "a-b", "0x1000--0x2000",
          "0x1000-0x2000-0x3000", "0x1000:0x2000", "0x1000-0x10000000000000000", "1-2x"}) {
        auto r = parse_phys_range(text);
        ASSERT_FALSE(r.ok()) << "'" << text << "' accepted";
        EXPECT_EQ(r.error().code, EINVAL) << text;
    }
}

// --- load_config with a host -------------------------------------------

class LoadConfig : public ::testing::Test {
  protected:
    fake::FakeHostOs os;
    const std::string path = "/etc/tagmem/tagmem.conf";
};

TEST_F(LoadConfig, MissingFileIsEmptyWhenMissingOk) {
    auto c = load_config(path, true, os);
    EXPECT_THAT(c.errors, IsEmpty()) << joined(c.errors);
    EXPECT_THAT(c.tags, IsEmpty());
    EXPECT_EQ(c.origin, path);
}

TEST_F(LoadConfig, MissingFileIsAnErrorOtherwise) {
    auto c = load_config(path, false, os);
    ASSERT_THAT(c.errors, SizeIs(1));
    EXPECT_THAT(c.errors[0], HasSubstr(path));
    EXPECT_THAT(c.tags, IsEmpty());
    EXPECT_EQ(c.origin, path);
}

TEST_F(LoadConfig, UnreadableFileIsAnErrorEvenWhenMissingOk) {
    os.add_file(path, std::string("[tag ") + kA + "]\nname = a\n");
    os.fail(path, EACCES);
    auto c = load_config(path, true, os);
    ASSERT_THAT(c.errors, SizeIs(1));
    EXPECT_THAT(c.errors[0], AllOf(HasSubstr(path), HasSubstr("Permission denied")));
    EXPECT_THAT(c.tags, IsEmpty());
}

TEST_F(LoadConfig, DirectoryInsteadOfFileIsAnError) {
    os.add_dir(path);
    auto c = load_config(path, true, os);
    EXPECT_THAT(c.errors, SizeIs(1));
    EXPECT_THAT(c.tags, IsEmpty());
}

TEST_F(LoadConfig, ValidFileWithKnownUsersLoads) {
    os.add_user("famfs", 1001);
    os.add_group("famfs", 1002);
    os.add_file(path, std::string("[tag ") + kA +
                          "]\nowner = famfs\ngroup = famfs\nmode = 0660\n[tag " + kB +
                          "]\nowner = 4242\ngroup = 4343\n");
    auto c = load_config(path, false, os);
    EXPECT_THAT(c.errors, IsEmpty()) << joined(c.errors);
    EXPECT_EQ(c.origin, path);
    ASSERT_THAT(tags_of(c), ElementsAre(U(kA), U(kB)));
    EXPECT_EQ(c.find(U(kA))->owner, "famfs");
    EXPECT_EQ(c.find(U(kB))->owner, "4242");
}

TEST_F(LoadConfig, UnknownOwnerDropsTheSection) {
    os.add_group("famfs", 1002);
    os.add_file(path, std::string("[tag ") + kA + "]\nname = a\n[tag " + kB +
                          "]\nowner = nosuchuser\ngroup = famfs\n");
    auto c = load_config(path, false, os);
    ASSERT_THAT(c.errors, SizeIs(1)) << joined(c.errors);
    EXPECT_THAT(c.errors[0], ContainsRegex("^/etc/tagmem/tagmem\\.conf:[34]: "));
    EXPECT_THAT(c.errors[0], AllOf(HasSubstr(std::string("[tag ") + kB),
                                   HasSubstr("unknown user 'nosuchuser'")));
    EXPECT_THAT(tags_of(c), ElementsAre(U(kA)));
}

TEST_F(LoadConfig, UnknownGroupDropsTheSection) {
    os.add_user("famfs", 1001);
    os.add_file(path, std::string("[tag ") + kA + "]\nowner = famfs\ngroup = nosuchgroup\n[tag " +
                          kB + "]\nname = b\n");
    auto c = load_config(path, false, os);
    ASSERT_THAT(c.errors, SizeIs(1)) << joined(c.errors);
    EXPECT_THAT(c.errors[0], ContainsRegex("^/etc/tagmem/tagmem\\.conf:[12]: "));
    EXPECT_THAT(c.errors[0], AllOf(HasSubstr(kA), HasSubstr("unknown group 'nosuchgroup'")));
    EXPECT_THAT(tags_of(c), ElementsAre(U(kB)));
}

TEST_F(LoadConfig, UnknownOwnerAndGroupGiveOneErrorPerSection) {
    os.add_file(path, std::string("[tag ") + kA + "]\nowner = ghost\ngroup = ghosts\n[tag " + kB +
                          "]\ngroup = ghosts\n");
    auto c = load_config(path, false, os);
    ASSERT_THAT(c.errors, SizeIs(2)) << joined(c.errors);
    EXPECT_THAT(c.errors[0], AllOf(HasSubstr(kA), HasSubstr("unknown user 'ghost'")));
    EXPECT_THAT(c.errors[1], AllOf(HasSubstr(kB), HasSubstr("unknown group 'ghosts'")));
    EXPECT_THAT(c.tags, IsEmpty());
}

TEST_F(LoadConfig, ParseErrorsAreCarriedAlongWithUserErrors) {
    os.add_file(path, std::string("[tag ") + kA + "]\nmode = 0999\n[tag " + kB +
                          "]\nowner = ghost\n[tag " + kC + "]\nowner = root\n");
    auto c = load_config(path, true, os);
    ASSERT_THAT(c.errors, SizeIs(2)) << joined(c.errors);
    EXPECT_THAT(c.errors[0], StartsWith(path + ":2: "));
    EXPECT_THAT(c.errors[1], HasSubstr("unknown user 'ghost'"));
    EXPECT_THAT(tags_of(c), ElementsAre(U(kC)));
}

TEST_F(LoadConfig, NumericOwnersAreCheckedStrictlyAtLoad) {
    // parse_config refuses these already; the host's lookup refuses them
    // again for callers that skip it (records.cpp resolves at every scan).
    EXPECT_FALSE(os.user_id("4294967295").ok());
    EXPECT_FALSE(os.user_id("4294967296").ok());
    EXPECT_FALSE(os.group_id("18446744073709551617").ok());
    EXPECT_EQ(os.user_id("4294967294").value_or(0), 4294967294u);
}

TEST(RealHostOs, AccountNumbersAndNamesAreStrict) {
    HostOs& os = real_host_os();
    EXPECT_EQ(os.user_id("0").value_or(1), 0u);
    EXPECT_EQ(os.user_id("root").value_or(1), 0u);
    EXPECT_EQ(os.group_id("root").value_or(1), 0u);
    for (const char* bad : {"4294967295", "4294967296", "99999999999999999999999", "ro\x1bot",
                            "r\xffoot", "a:b", "-root"}) {
        EXPECT_FALSE(os.user_id(bad).ok()) << escaped_for_display(bad);
        EXPECT_FALSE(os.group_id(bad).ok()) << escaped_for_display(bad);
    }
    auto ghost = os.user_id("no-such-user-tagmem");
    ASSERT_FALSE(ghost.ok());
    EXPECT_EQ(ghost.error().code, ENOENT);
}

TEST_F(LoadConfig, SyntaxErrorInTheFileLeavesNoTags) {
    os.add_file(path, std::string("[tag ") + kA + "]\nowner = root\nnonsense\n");
    auto c = load_config(path, false, os);
    EXPECT_THAT(c.tags, IsEmpty());
    ASSERT_THAT(c.errors, SizeIs(1));
    EXPECT_THAT(c.errors[0], StartsWith(path + ":3: syntax error"));
}

// --- a large file, read by the real host ------------------------------

// A file of the real file system, removed at the end of the test.
class RealConfigFile : public ::testing::Test {
  protected:
    void SetUp() override {
        path_ = ::testing::TempDir() + "tagmem-config-test-XXXXXX";
        int fd = ::mkstemp(path_.data());
        ASSERT_GE(fd, 0) << std::strerror(errno);
        ::close(fd);
    }
    void TearDown() override { ::unlink(path_.c_str()); }
    void write(const std::string& text) {
        std::ofstream out(path_, std::ios::binary | std::ios::trunc);
        out << text;
        ASSERT_TRUE(out.good());
    }
    std::string path_;
};

// Issue 19: read as a sysfs attribute (64 KiB at most), a file of more than
// about 300 sections was refused whole.
TEST_F(RealConfigFile, AHundredThousandSectionsAreRead) {
    constexpr int kSections = 100'000;
    std::string text;
    for (int i = 0; i < kSections; ++i)
        text += fmt::format("[tag 6f1c2d3e-0000-4000-8000-{:012x}]\nname = pool-{}\nmode = 0640\n",
                            i, i);
    ASSERT_GT(text.size(), std::size_t{64} << 10);
    write(text);
    auto c = load_config(path_, false, real_host_os());
    EXPECT_THAT(c.errors, IsEmpty()) << joined(c.errors);
    ASSERT_THAT(c.tags, SizeIs(kSections));
    const TagConfig* last = c.find(U("6f1c2d3e-0000-4000-8000-00000001869f"));
    ASSERT_NE(last, nullptr);
    EXPECT_EQ(last->name, "pool-99999");
    EXPECT_EQ(last->mode, mode_t{0640});
}

TEST_F(RealConfigFile, OverTheBoundIsAClearErrorAndNoTags) {
    write(std::string("[tag ") + kA + "]\nmode = 0640\n");
    // Sparse: refused from its size, before a byte of it is read.
    ASSERT_EQ(::truncate(path_.c_str(), static_cast<off_t>(kMaxConfigBytes + 1)), 0);
    auto c = load_config(path_, true, real_host_os());
    EXPECT_THAT(c.tags, IsEmpty());
    ASSERT_THAT(c.errors, SizeIs(1));
    EXPECT_EQ(c.errors[0], fmt::format("{}: larger than {} bytes, the most it may have; not read",
                                       path_, kMaxConfigBytes));
}

// The in-memory host has no bound of its own: HostOs's default applies it.
TEST_F(LoadConfig, OverTheBoundOnAnyHostIsAnError) {
    os.add_file(path, std::string(kMaxConfigBytes + 1, '#'));
    auto c = load_config(path, true, os);
    EXPECT_THAT(c.tags, IsEmpty());
    ASSERT_THAT(c.errors, SizeIs(1));
    EXPECT_THAT(c.errors[0], AllOf(HasSubstr(path), HasSubstr("larger than")));
}

// A read that fails for a passing reason (the daemon at its descriptor
// limit) is an error, never an empty configuration: the daemon keeps the
// previous one rather than dropping every grant.
TEST_F(LoadConfig, AFailedReadIsAnErrorNotAnEmptyConfiguration) {
    os.add_file(path, std::string("[tag ") + kA + "]\nname = a\n");
    for (int err : {EMFILE, ENFILE, ENOMEM, EIO}) {
        os.heal();
        os.fail_calls(fake::op_read, err, path);
        auto c = load_config(path, true, os);
        EXPECT_THAT(c.errors, SizeIs(1)) << err;
        EXPECT_THAT(c.tags, IsEmpty());
    }
}

} // namespace
} // namespace tagmem
