// SPDX-License-Identifier: Apache-2.0
// LD_PRELOAD shim for tests: tagmemfs sees a kernel that cannot open files
// and directories without asking (FUSE_CAP_NO_OPEN_SUPPORT before 4.20,
// FUSE_CAP_NO_OPENDIR_SUPPORT before 5.1). It wraps fuse_session_new to
// clear both bits from what the kernel offers before tagmemfs's init
// callback reads them; nothing else changes.
#define _GNU_SOURCE
#define FUSE_USE_VERSION 312
#include <dlfcn.h>
#include <fuse_lowlevel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void (*real_init)(void*, struct fuse_conn_info*);
static struct fuse_lowlevel_ops wrapped;

static void init_on_an_old_kernel(void* userdata, struct fuse_conn_info* conn) {
    conn->capable &= ~(unsigned)(FUSE_CAP_NO_OPEN_SUPPORT | FUSE_CAP_NO_OPENDIR_SUPPORT);
    if (real_init)
        real_init(userdata, conn);
}

struct fuse_session* fuse_session_new(struct fuse_args* args, const struct fuse_lowlevel_ops* op,
                                      size_t op_size, void* userdata) {
    typedef struct fuse_session* (*real_t)(struct fuse_args*, const struct fuse_lowlevel_ops*,
                                           size_t, void*);
    real_t real;
    void* sym = dlvsym(RTLD_NEXT, "fuse_session_new", "FUSE_3.0");
    memcpy(&real, &sym, sizeof real); // POSIX allows it; ISO C has no cast for it
    if (!sym || op_size > sizeof wrapped) {
        fprintf(stderr, "old_kernel_shim: cannot wrap fuse_session_new\n");
        abort();
    }
    wrapped = *op;
    real_init = op->init;
    wrapped.init = init_on_an_old_kernel;
    return real(args, &wrapped, op_size, userdata);
}
