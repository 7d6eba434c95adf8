// SPDX-License-Identifier: Apache-2.0
// LD_PRELOAD shim for tests: one call of tagmemfs fails as the kernel would
// make it fail, chosen by TAGMEM_FAULT (test_faults.py):
//   eventfd=N    the Nth eventfd() (1: the first) fails with EMFILE, as at
//                the descriptor limit;
//   sigaction=S  installing a handler for signal number S fails with EINVAL.
// Anything else passes through unchanged. Only calls through the dynamic
// symbol are seen (libc's own internal ones are not, and need not be).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>

static long fault_arg(const char* name) {
    const char* spec = getenv("TAGMEM_FAULT");
    size_t n = strlen(name);
    if (!spec || strncmp(spec, name, n) != 0 || spec[n] != '=')
        return -1;
    return strtol(spec + n + 1, NULL, 10);
}

static void* next(const char* symbol) {
    void* sym = dlsym(RTLD_NEXT, symbol);
    if (!sym)
        abort();
    return sym;
}

int eventfd(unsigned int count, int flags) {
    static int calls; // tagmemfs makes its eventfds from one thread
    typedef int (*real_t)(unsigned int, int);
    real_t real;
    void* sym = next("eventfd");
    memcpy(&real, &sym, sizeof real); // POSIX allows it; ISO C has no cast for it
    if (++calls == fault_arg("eventfd")) {
        errno = EMFILE;
        return -1;
    }
    return real(count, flags);
}

int sigaction(int sig, const struct sigaction* act, struct sigaction* old) {
    typedef int (*real_t)(int, const struct sigaction*, struct sigaction*);
    real_t real;
    void* sym = next("sigaction");
    memcpy(&real, &sym, sizeof real);
    if (act && sig == fault_arg("sigaction")) {
        errno = EINVAL;
        return -1;
    }
    return real(sig, act, old);
}
