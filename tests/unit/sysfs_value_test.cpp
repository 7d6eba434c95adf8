// SPDX-License-Identifier: Apache-2.0
#include "sysfs_value.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <limits>
#include <string>

namespace tagmem {
namespace {

using ::testing::HasSubstr;

constexpr std::uint64_t kU64Max = std::numeric_limits<std::uint64_t>::max();

// --- trim_attr ---------------------------------------------------------

TEST(TrimAttr, StripsNewlineAndSurroundingBlanksOnly) {
    EXPECT_EQ(trim_attr("42\n"), "42");
    EXPECT_EQ(trim_attr("  42 \t\r\n"), "42");
    EXPECT_EQ(trim_attr("4 2\n"), "4 2");
    EXPECT_EQ(trim_attr("\n"), "");
    EXPECT_EQ(trim_attr(""), "");
}

// --- parse_u64 ---------------------------------------------------------

TEST(ParseU64, Decimal) {
    EXPECT_EQ(parse_u64("0").value(), 0u);
    EXPECT_EQ(parse_u64("2097152").value(), 2097152u);
    EXPECT_EQ(parse_u64("18446744073709551615").value(), kU64Max);
}

TEST(ParseU64, HexWithPrefixEitherCase) {
    EXPECT_EQ(parse_u64("0x1040000000").value(), 0x1040000000u);
    EXPECT_EQ(parse_u64("0X1040000000").value(), 0x1040000000u);
    EXPECT_EQ(parse_u64("0xABCdef").value(), 0xabcdefu);
    EXPECT_EQ(parse_u64("0x0").value(), 0u);
    EXPECT_EQ(parse_u64("0xffffffffffffffff").value(), kU64Max);
}

TEST(ParseU64, TrailingNewlineAndBlanksAreTheKernelsAndAccepted) {
    EXPECT_EQ(parse_u64("4096\n").value(), 4096u);
    EXPECT_EQ(parse_u64("0x1000\n").value(), 0x1000u);
    EXPECT_EQ(parse_u64(" 7 \n").value(), 7u);
}

TEST(ParseU64, LeadingZerosAreDecimalNotOctal) {
    EXPECT_EQ(parse_u64("010").value(), 10u);
}

class ParseU64Rejects : public ::testing::TestWithParam<std::string> {};

TEST_P(ParseU64Rejects, WithEinval) {
    auto v = parse_u64(GetParam());
    ASSERT_FALSE(v.ok()) << "accepted '" << GetParam() << "' as " << *v;
    EXPECT_EQ(v.error().code, EINVAL);
    EXPECT_THAT(v.error().message, HasSubstr("not an unsigned number"));
}

INSTANTIATE_TEST_SUITE_P(Malformed, ParseU64Rejects,
                         ::testing::Values("", "\n", "   ", "abc", "12abc", "12 34", "1.5", "-1",
                                           "+1", "0x", "0x\n", "0xg", "0x-1", "0x0x1", "x10", "ff",
                                           "1e3", "18446744073709551616", "99999999999999999999999",
                                           "0x10000000000000000", "4096\nX"));

TEST(ParseU64, MessageQuotesTheTrimmedInput) {
    auto v = parse_u64("junk\n");
    ASSERT_FALSE(v.ok());
    EXPECT_THAT(v.error().message, HasSubstr("'junk'"));
}

// --- parse_i64 ---------------------------------------------------------

TEST(ParseI64, SignedDecimal) {
    EXPECT_EQ(parse_i64("0").value(), 0);
    EXPECT_EQ(parse_i64("-1\n").value(), -1);
    EXPECT_EQ(parse_i64("4095").value(), 4095);
    EXPECT_EQ(parse_i64("9223372036854775807").value(), std::numeric_limits<std::int64_t>::max());
    EXPECT_EQ(parse_i64("-9223372036854775808").value(), std::numeric_limits<std::int64_t>::min());
}

class ParseI64Rejects : public ::testing::TestWithParam<std::string> {};

TEST_P(ParseI64Rejects, WithEinval) {
    auto v = parse_i64(GetParam());
    ASSERT_FALSE(v.ok()) << "accepted '" << GetParam() << "' as " << *v;
    EXPECT_EQ(v.error().code, EINVAL);
    EXPECT_THAT(v.error().message, HasSubstr("not a number"));
}

INSTANTIATE_TEST_SUITE_P(Malformed, ParseI64Rejects,
                         ::testing::Values("", "\n", "-", "--1", "+1", "1-", "0x10", "1.0", "one",
                                           "- 1", "9223372036854775808", "-9223372036854775809"));

// --- parse_dev_number --------------------------------------------------

TEST(ParseDevNumber, KernelFormat) {
    auto d = parse_dev_number("252:3\n");
    ASSERT_TRUE(d.ok()) << d.error().message;
    EXPECT_EQ(d->major, 252u);
    EXPECT_EQ(d->minor, 3u);
    EXPECT_EQ(*d, (DevNumber{252, 3}));
}

TEST(ParseDevNumber, ExtremesOfUnsigned) {
    EXPECT_EQ(parse_dev_number("0:0").value(), (DevNumber{0, 0}));
    EXPECT_EQ(parse_dev_number("4294967295:4294967295").value(),
              (DevNumber{4294967295u, 4294967295u}));
}

TEST(DevNumber, OrdersByMajorThenMinor) {
    EXPECT_LT((DevNumber{1, 9}), (DevNumber{2, 0}));
    EXPECT_LT((DevNumber{2, 0}), (DevNumber{2, 1}));
    EXPECT_NE((DevNumber{2, 1}), (DevNumber{1, 2}));
}

class ParseDevNumberRejects : public ::testing::TestWithParam<std::string> {};

TEST_P(ParseDevNumberRejects, WithEinval) {
    auto d = parse_dev_number(GetParam());
    ASSERT_FALSE(d.ok()) << "accepted '" << GetParam() << "' as " << d->major << ":" << d->minor;
    EXPECT_EQ(d.error().code, EINVAL);
    EXPECT_THAT(d.error().message, HasSubstr("major:minor"));
}

INSTANTIATE_TEST_SUITE_P(Malformed, ParseDevNumberRejects,
                         ::testing::Values("", "\n", "252", "2523", "252:", ":3", ":", "252:3:1",
                                           "252;3", "252.3", "0xfc:3", "252:0x3", "fc:3", "-1:3",
                                           "252:-3", "4294967296:0", "0:4294967296",
                                           "99999999999999999999:1", "252:3 junk", "a:b"));

// Only the kernel's own %u:%u spelling is a device number.
TEST(ParseDevNumber, RejectsUpperCaseHexPrefix) {
    auto d = parse_dev_number("0XFC:3\n");
    EXPECT_FALSE(d.ok()) << "accepted as " << d->major << ":" << d->minor;
    auto m = parse_dev_number("252:0X3\n");
    EXPECT_FALSE(m.ok()) << "accepted as " << m->major << ":" << m->minor;
}

// --- parse_tag_attr ----------------------------------------------------

TEST(ParseTagAttr, RealUuidIsATag) {
    auto t = parse_tag_attr("6f1c2d3e-0000-4000-8000-000000000001\n");
    ASSERT_TRUE(t.ok()) << t.error().message;
    ASSERT_TRUE(t->has_value());
    EXPECT_EQ((*t)->str(), "6f1c2d3e-0000-4000-8000-000000000001");
}

TEST(ParseTagAttr, UpperCaseUuidIsTheSameTag) {
    auto t = parse_tag_attr("6F1C2D3E-0000-4000-8000-00000000000A\n");
    ASSERT_TRUE(t.ok());
    ASSERT_TRUE(t->has_value());
    EXPECT_EQ((*t)->str(), "6f1c2d3e-0000-4000-8000-00000000000a");
}

TEST(ParseTagAttr, AllZeroUuidIsNoTag) {
    auto t = parse_tag_attr("00000000-0000-0000-0000-000000000000\n");
    ASSERT_TRUE(t.ok()) << t.error().message;
    EXPECT_FALSE(t->has_value());
}

TEST(ParseTagAttr, ZeroOfOlderSeriesIsNoTag) {
    for (const char* text : {"0", "0\n", " 0 \n"}) {
        auto t = parse_tag_attr(text);
        ASSERT_TRUE(t.ok()) << "'" << text << "': " << t.error().message;
        EXPECT_FALSE(t->has_value()) << text;
    }
}

class ParseTagAttrRejects : public ::testing::TestWithParam<std::string> {};

TEST_P(ParseTagAttrRejects, WithEinval) {
    auto t = parse_tag_attr(GetParam());
    ASSERT_FALSE(t.ok()) << "accepted '" << GetParam() << "'";
    EXPECT_EQ(t.error().code, EINVAL);
    EXPECT_THAT(t.error().message, HasSubstr("not a UUID"));
}

INSTANTIATE_TEST_SUITE_P(Malformed, ParseTagAttrRejects,
                         ::testing::Values("", "\n", "00", "0x0", "1", "00000000",
                                           "6f1c2d3e-0000-4000-8000-00000000\n",   // truncated
                                           "6f1c2d3e-0000-4000-8000-0000000000\n", // 35 chars
                                           "6f1c2d3e-0000-4000-8000-000000000001x\n", "garbage\n",
                                           "{6f1c2d3e-0000-4000-8000-000000000001}",
                                           "6f1c2d3e00004000800000000000000000001",
                                           "6f1c2d3e-0000-4000-8000-00000000000g\n"));

// --- parse_uuid_attr (NVDIMM uuids: a plain UUID, nil included) ----------

TEST(ParseUuidAttr, KernelFormatWithNewline) {
    auto u = parse_uuid_attr("6F1C2D3E-0000-4000-8000-000000000001\n");
    ASSERT_TRUE(u.ok()) << u.error().message;
    EXPECT_EQ(u->str(), "6f1c2d3e-0000-4000-8000-000000000001");
}

TEST(ParseUuidAttr, NilIsAValueNotNoValue) {
    auto u = parse_uuid_attr("00000000-0000-0000-0000-000000000000\n");
    ASSERT_TRUE(u.ok());
    EXPECT_TRUE(u->is_nil());
}

TEST(ParseUuidAttr, Rejects) {
    for (const char* text : {"", "\n", "0\n", "6f1c2d3e-0000-4000-8000-00000000000\n",
                             "6f1c2d3e-0000-4000-8000-0000000000011\n", "garbage\n",
                             "6f1c2d3e-0000-4000-8000-000000000001\njunk"}) {
        auto u = parse_uuid_attr(text);
        ASSERT_FALSE(u.ok()) << "accepted '" << text << "'";
        EXPECT_EQ(u.error().code, EINVAL);
    }
}

// --- parse_bool --------------------------------------------------------

TEST(ParseBool, AllSpellingsAnyCase) {
    for (const char* t : {"1", "true", "yes", "on", "TRUE", "Yes", "On", " yes\n"})
        EXPECT_TRUE(parse_bool(t).value()) << t;
    for (const char* f : {"0", "false", "no", "off", "FALSE", "No", "OFF", "0\n"})
        EXPECT_FALSE(parse_bool(f).value()) << f;
}

class ParseBoolRejects : public ::testing::TestWithParam<std::string> {};

TEST_P(ParseBoolRejects, WithEinval) {
    auto b = parse_bool(GetParam());
    ASSERT_FALSE(b.ok()) << "accepted '" << GetParam() << "' as " << *b;
    EXPECT_EQ(b.error().code, EINVAL);
    EXPECT_THAT(b.error().message, HasSubstr("not a boolean"));
}

INSTANTIATE_TEST_SUITE_P(Malformed, ParseBoolRejects,
                         ::testing::Values("", "\n", "2", "-1", "y", "n", "t", "f", "yess",
                                           "enabled", "01", "true false", "ja"));

// --- parse_size --------------------------------------------------------

TEST(ParseSize, BytesAndBinarySuffixesEitherCase) {
    EXPECT_EQ(parse_size("0").value(), 0u);
    EXPECT_EQ(parse_size("4096").value(), 4096u);
    EXPECT_EQ(parse_size("1K").value(), 1024u);
    EXPECT_EQ(parse_size("1k").value(), 1024u);
    EXPECT_EQ(parse_size("2M").value(), 2u << 20);
    EXPECT_EQ(parse_size("2m").value(), 2u << 20);
    EXPECT_EQ(parse_size("16G").value(), 16ull << 30);
    EXPECT_EQ(parse_size("3t\n").value(), 3ull << 40);
    EXPECT_EQ(parse_size("0x10K").value(), 16u << 10);
}

TEST(ParseSize, LargestValuesThatFit) {
    EXPECT_EQ(parse_size("16777215T").value(), 16777215ull << 40);
    EXPECT_EQ(parse_size("18446744073709551615").value(), kU64Max);
}

TEST(ParseSize, OverflowIsErange) {
    for (const char* text : {"16777216T", "17179869184G", "18014398509481984K"}) {
        auto s = parse_size(text);
        ASSERT_FALSE(s.ok()) << text << " -> " << *s;
        EXPECT_EQ(s.error().code, ERANGE) << text;
        EXPECT_THAT(s.error().message, HasSubstr("too large"));
    }
}

class ParseSizeRejects : public ::testing::TestWithParam<std::string> {};

TEST_P(ParseSizeRejects, WithEinval) {
    auto s = parse_size(GetParam());
    ASSERT_FALSE(s.ok()) << "accepted '" << GetParam() << "' as " << *s;
    EXPECT_EQ(s.error().code, EINVAL);
    EXPECT_THAT(s.error().message, HasSubstr("not a size"));
}

INSTANTIATE_TEST_SUITE_P(Malformed, ParseSizeRejects,
                         ::testing::Values("", "K", "G\n", "1B", "1KB", "1KiB", "1P", "1.5G", "-1K",
                                           "K1", "1 G x", "18446744073709551616", "one"));

TEST(PathParts, SplitAtTheLastSlash) {
    EXPECT_EQ(parent_path("/sys/devices/region0/dax0.1"), "/sys/devices/region0");
    EXPECT_EQ(base_name("/sys/devices/region0/dax0.1"), "dax0.1");
    EXPECT_EQ(parent_path("dax0.1"), "");
    EXPECT_EQ(base_name("dax0.1"), "dax0.1");
    EXPECT_EQ(parent_path("/dax0.1"), "");
    EXPECT_EQ(base_name("/sys/bus/dax/"), "");
}

} // namespace
} // namespace tagmem
