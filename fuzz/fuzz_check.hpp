// SPDX-License-Identifier: Apache-2.0
// A property of a parser's result that must hold for every input. A broken
// one aborts, so that libFuzzer saves the input as a crash, as it does for a
// sanitizer report; assert() would vanish in release builds.
#pragma once

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            std::fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #cond);       \
            std::abort();                                                                          \
        }                                                                                          \
    } while (0)
