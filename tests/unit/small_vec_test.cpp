// SPDX-License-Identifier: Apache-2.0
// SmallVec: behaves as a vector across the 0 / 1 (inline) / many boundary.
#include "small_vec.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

namespace tagmem {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

TEST(SmallVec, GrowsAndShrinksAcrossTheInlineElement) {
    SmallVec<std::string> v;
    EXPECT_TRUE(v.empty());
    EXPECT_EQ(v.begin(), v.end());
    v.push_back("b");
    EXPECT_THAT(v, ElementsAre("b"));
    v.insert(v.begin(), "a");
    v.push_back("d");
    v.insert(v.begin() + 2, "c");
    EXPECT_THAT(v, ElementsAre("a", "b", "c", "d"));
    EXPECT_EQ(v.front(), "a");
    EXPECT_EQ(v.back(), "d");
    EXPECT_EQ(v[2], "c");
    auto next = v.erase(v.begin() + 1);
    EXPECT_EQ(*next, "c");
    EXPECT_THAT(v, ElementsAre("a", "c", "d"));
    v.erase(v.begin());
    v.erase(v.end() - 1);
    EXPECT_THAT(v, ElementsAre("c"));
    v.erase(v.begin());
    EXPECT_THAT(v, IsEmpty());
    EXPECT_EQ(v.size(), 0u);
}

TEST(SmallVec, EraseValueRemovesEveryCopy) {
    auto a = std::make_shared<int>(1);
    auto b = std::make_shared<int>(2);
    SmallVec<std::shared_ptr<int>> v{a, b, a};
    EXPECT_EQ(v.erase_value(a), 2u);
    ASSERT_EQ(v.size(), 1u);
    EXPECT_EQ(v[0], b);
    EXPECT_EQ(v.erase_value(a), 0u);
    EXPECT_EQ(v.erase_value(b), 1u);
    EXPECT_TRUE(v.empty());
    EXPECT_EQ(a.use_count(), 1); // nothing kept alive by a removed element
}

TEST(SmallVec, CopiesAreDeepAndMovesLeaveEmpty) {
    for (std::size_t n : {0u, 1u, 3u}) {
        std::vector<int> items;
        for (std::size_t i = 0; i < n; ++i)
            items.push_back(static_cast<int>(i) * 10);
        SmallVec<int> v(items);
        SmallVec<int> copy = v;
        EXPECT_EQ(copy, v) << n;
        EXPECT_EQ(copy, items) << n;
        if (n) {
            copy[0] = 99;
            EXPECT_NE(copy, v) << "the copy shares storage, n=" << n;
        }
        SmallVec<int> moved = std::move(v);
        EXPECT_EQ(moved, items) << n;
        EXPECT_TRUE(v.empty()) << n; // NOLINT(bugprone-use-after-move): the point
        copy = moved;
        EXPECT_EQ(copy.to_vector(), items) << n;
    }
}

TEST(SmallVec, EqualityIsByContentAndLength) {
    EXPECT_EQ((SmallVec<int>{1, 2}), (SmallVec<int>{1, 2}));
    EXPECT_NE((SmallVec<int>{1, 2}), (SmallVec<int>{1}));
    EXPECT_NE((SmallVec<int>{1}), (SmallVec<int>{}));
    EXPECT_NE((SmallVec<int>{2, 1}), (SmallVec<int>{1, 2}));
}

} // namespace
} // namespace tagmem
