// SPDX-License-Identifier: Apache-2.0
// LD_PRELOAD shim for tests: `tagmem online` believes it runs in the host's
// PID namespace. The online tests run tagmem in a PID namespace of their
// own (with its own /proc) because, outside one, this machine denies even
// root some processes' /proc/<pid>/fd; tagmem rightly refuses to online
// from a child namespace (issue 19), which test_online.py checks without
// this shim. It answers readlink("/proc/self/ns/pid") with the init PID
// namespace's link; every other call goes to libc.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>
#include <unistd.h>

ssize_t readlink(const char* restrict path, char* restrict buf, size_t size) {
    static const char init_ns[] = "pid:[4026531836]";
    if (strcmp(path, "/proc/self/ns/pid") == 0) {
        size_t n = sizeof init_ns - 1 < size ? sizeof init_ns - 1 : size;
        memcpy(buf, init_ns, n);
        return (ssize_t)n;
    }
    typedef ssize_t (*real_t)(const char* restrict, char* restrict, size_t);
    real_t real;
    void* sym = dlsym(RTLD_NEXT, "readlink");
    memcpy(&real, &sym, sizeof real); // POSIX allows it; ISO C has no cast for it
    return real(path, buf, size);
}

// What readlink() becomes with _FORTIFY_SOURCE.
ssize_t __readlink_chk(const char* path, char* buf, size_t len, size_t buflen) {
    (void)buflen;
    return readlink(path, buf, len);
}
