// SPDX-License-Identifier: Apache-2.0
#include "uuid.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <unordered_set>

namespace tagmem {
namespace {

using ::testing::HasSubstr;

constexpr const char* kCanonical = "6f1c2d3e-0000-4000-8000-00000000000a";

TEST(UuidParse, CanonicalLowerCase) {
    auto u = Uuid::parse("6f1c2d3e-a1b2-4c3d-8e4f-0123456789ab");
    ASSERT_TRUE(u.ok()) << u.error().message;
    const std::array<std::uint8_t, 16> want{0x6f, 0x1c, 0x2d, 0x3e, 0xa1, 0xb2, 0x4c, 0x3d,
                                            0x8e, 0x4f, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab};
    EXPECT_EQ(u->bytes(), want);
    EXPECT_FALSE(u->is_nil());
}

TEST(UuidParse, UpperCaseEqualsLowerCase) {
    auto lower = Uuid::parse("6f1c2d3e-a1b2-4c3d-8e4f-0123456789ab");
    auto upper = Uuid::parse("6F1C2D3E-A1B2-4C3D-8E4F-0123456789AB");
    auto mixed = Uuid::parse("6f1C2d3E-A1b2-4C3d-8E4f-0123456789aB");
    ASSERT_TRUE(lower.ok());
    ASSERT_TRUE(upper.ok()) << upper.error().message;
    ASSERT_TRUE(mixed.ok()) << mixed.error().message;
    EXPECT_EQ(*lower, *upper);
    EXPECT_EQ(*lower, *mixed);
}

TEST(UuidStr, RoundTripIsLowerCaseCanonical) {
    auto u = Uuid::parse("6F1C2D3E-A1B2-4C3D-8E4F-0123456789AB");
    ASSERT_TRUE(u.ok());
    EXPECT_EQ(u->str(), "6f1c2d3e-a1b2-4c3d-8e4f-0123456789ab");
    auto again = Uuid::parse(u->str());
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, *u);
    EXPECT_EQ(again->str(), u->str());
}

TEST(UuidStr, EveryHexDigitSurvivesRoundTrip) {
    for (const char* text :
         {"00112233-4455-6677-8899-aabbccddeeff", "ffeeddcc-bbaa-9988-7766-554433221100",
          "ffffffff-ffff-ffff-ffff-ffffffffffff"}) {
        auto u = Uuid::parse(text);
        ASSERT_TRUE(u.ok()) << text;
        EXPECT_EQ(u->str(), text);
    }
}

TEST(UuidStr, DefaultConstructedIsNilAndPrintsZeros) {
    Uuid u;
    EXPECT_TRUE(u.is_nil());
    EXPECT_EQ(u.str(), "00000000-0000-0000-0000-000000000000");
}

TEST(UuidNil, ParsedAllZeroIsNil) {
    auto u = Uuid::parse("00000000-0000-0000-0000-000000000000");
    ASSERT_TRUE(u.ok());
    EXPECT_TRUE(u->is_nil());
    EXPECT_EQ(*u, Uuid());
}

TEST(UuidNil, AnySingleNonZeroByteIsNotNil) {
    for (std::size_t i = 0; i < 16; ++i) {
        std::array<std::uint8_t, 16> bytes{};
        bytes[i] = 1;
        EXPECT_FALSE(Uuid(bytes).is_nil()) << "byte " << i;
    }
    // The last character alone.
    auto u = Uuid::parse("00000000-0000-0000-0000-000000000001");
    ASSERT_TRUE(u.ok());
    EXPECT_FALSE(u->is_nil());
}

TEST(UuidOrder, ComparesBytewiseLikeTheText) {
    auto a = *Uuid::parse("00000000-0000-0000-0000-000000000001");
    auto b = *Uuid::parse("00000000-0000-0000-0000-000000000002");
    auto c = *Uuid::parse("10000000-0000-0000-0000-000000000000");
    EXPECT_LT(a, b);
    EXPECT_LT(b, c);
    EXPECT_LT(Uuid(), a);
    EXPECT_NE(a, b);
    EXPECT_EQ(a, *Uuid::parse("00000000-0000-0000-0000-000000000001"));
    // The first byte weighs most: same order as the canonical strings.
    EXPECT_EQ(a < c, a.str() < c.str());
    std::set<Uuid> sorted{c, a, b, a};
    ASSERT_EQ(sorted.size(), 3u);
    EXPECT_EQ(*sorted.begin(), a);
    EXPECT_EQ(*sorted.rbegin(), c);
}

TEST(UuidHash, EqualValuesHashEqualAndDistinctValuesSpread) {
    auto lower = *Uuid::parse("6f1c2d3e-a1b2-4c3d-8e4f-0123456789ab");
    auto upper = *Uuid::parse("6F1C2D3E-A1B2-4C3D-8E4F-0123456789AB");
    std::hash<Uuid> h;
    EXPECT_EQ(h(lower), h(upper));
    // 256 UUIDs that differ in one byte only must not collide.
    std::unordered_set<std::size_t> hashes;
    for (int i = 0; i < 256; ++i) {
        std::array<std::uint8_t, 16> bytes{};
        bytes[15] = static_cast<std::uint8_t>(i);
        hashes.insert(h(Uuid(bytes)));
    }
    EXPECT_EQ(hashes.size(), 256u);
    std::unordered_set<Uuid> set{lower, upper};
    EXPECT_EQ(set.size(), 1u);
}

struct BadUuid {
    const char* what;
    std::string text;
};

std::string with_nul_at(std::size_t i) {
    std::string s = kCanonical;
    s[i] = '\0';
    return s;
}

class UuidRejects : public ::testing::TestWithParam<BadUuid> {};

TEST_P(UuidRejects, WithEinvalAndTheTextInTheMessage) {
    const auto& p = GetParam();
    auto u = Uuid::parse(p.text);
    ASSERT_FALSE(u.ok()) << p.what << " accepted: '" << p.text << "'";
    EXPECT_EQ(u.error().code, EINVAL);
    EXPECT_THAT(u.error().message, HasSubstr("not a UUID"));
    EXPECT_THAT(u.error().message, HasSubstr("'" + p.text + "'"));
}

INSTANTIATE_TEST_SUITE_P(
    Malformed, UuidRejects,
    ::testing::Values(BadUuid{"empty", ""},
                      BadUuid{"35 chars", "6f1c2d3e-0000-4000-8000-00000000000"},
                      BadUuid{"37 chars", "6f1c2d3e-0000-4000-8000-00000000000ab"},
                      BadUuid{"no dashes (32 hex)", "6f1c2d3e000040008000000000000000"},
                      BadUuid{"no dashes padded to 36", "6f1c2d3e0000400080000000000000000000"},
                      BadUuid{"dash shifted left", "6f1c2d3-e0000-4000-8000-00000000000a"},
                      BadUuid{"dash shifted right", "6f1c2d3e0-000-4000-8000-00000000000a"},
                      BadUuid{"last dash misplaced", "6f1c2d3e-0000-4000-80000-0000000000a"},
                      BadUuid{"underscore for dash", "6f1c2d3e_0000_4000_8000_00000000000a"},
                      BadUuid{"non-hex g", "6f1c2d3g-0000-4000-8000-00000000000a"},
                      BadUuid{"non-hex in the last group", "6f1c2d3e-0000-4000-8000-00000000000z"},
                      BadUuid{"non-hex in high nibble", "6f1c2d3e-0000-4000-8000-0000000000z0"},
                      BadUuid{"braces", "{6f1c2d3e-0000-4000-8000-00000000000a}"},
                      BadUuid{"braces at 36 chars", "{f1c2d3e-0000-4000-8000-00000000000}"},
                      BadUuid{"space inside", "6f1c2d3e-0000-4000-8000-00000 00000a"},
                      BadUuid{"tab inside", "6f1c2d3e-0000-40\t0-8000-00000000000a"},
                      BadUuid{"leading space", " 6f1c2d3e-0000-4000-8000-00000000000a"},
                      BadUuid{"trailing newline", "6f1c2d3e-0000-4000-8000-00000000000a\n"},
                      BadUuid{"urn prefix", "urn:uuid:6f1c2d3e-0000-4000-8000-00000000000a"},
                      BadUuid{"0x in a group", "0x1c2d3e-0000-4000-8000-00000000000a"},
                      BadUuid{"sign in a group", "+f1c2d3e-0000-4000-8000-00000000000a"},
                      BadUuid{"all dashes", "------------------------------------"},
                      BadUuid{"nul byte inside", with_nul_at(30)}),
    [](const auto& param_info) { return "case" + std::to_string(param_info.index); });

TEST(UuidParse, CanonicalConstantIsValid) {
    // Guard for the rejection table above: its near misses derive from this.
    auto u = Uuid::parse(kCanonical);
    ASSERT_TRUE(u.ok());
    EXPECT_EQ(u->str(), kCanonical);
}

} // namespace
} // namespace tagmem
