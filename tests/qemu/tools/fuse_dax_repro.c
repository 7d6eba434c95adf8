// SPDX-License-Identifier: Apache-2.0
//
// fuse_dax_repro: the smallest FUSE filesystem that shows the kernel crash
// tagmemfs is designed around (docs/fuse-dax-crash.md). Its root holds one
// entry, "dax", a character device whose number is a device-dax device's.
// Opening it runs device_dax's dax_open() on the FUSE inode, which sets
// S_DAX on it; with CONFIG_FUSE_DAX, evicting that inode later makes
// fuse_evict_inode() call fuse_dax_inode_cleanup() on a connection that has
// no DAX state.
//
//   fuse_dax_repro MOUNTPOINT MAJOR MINOR     (as root; stays in the foreground)
//
// then, for example:
//   exec 3<>MOUNTPOINT/dax; exec 3>&-      # any open() of the node
//   echo 2 >/proc/sys/vm/drop_caches       # evict it -> oops
//
// Build: cc -Wall -o fuse_dax_repro fuse_dax_repro.c $(pkg-config --cflags --libs fuse3)
// Plain C and libfuse 3 lowlevel only, so it can go to a kernel list as is.

#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

static dev_t dax_rdev;

static void fill(fuse_ino_t ino, struct stat* st) {
    memset(st, 0, sizeof(*st));
    st->st_ino = ino;
    if (ino == FUSE_ROOT_ID) {
        st->st_mode = S_IFDIR | 0755;
        st->st_nlink = 2;
    } else {
        st->st_mode = S_IFCHR | 0600;
        st->st_nlink = 1;
        st->st_rdev = dax_rdev;
    }
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    struct fuse_entry_param e;
    if (parent != FUSE_ROOT_ID || strcmp(name, "dax") != 0) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    memset(&e, 0, sizeof(e));
    e.ino = 2;
    fill(e.ino, &e.attr);
    e.attr_timeout = e.entry_timeout = 3600;
    fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
    struct stat st;
    (void)fi;
    if (ino != FUSE_ROOT_ID && ino != 2) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    fill(ino, &st);
    fuse_reply_attr(req, &st, 3600);
}

static const struct fuse_lowlevel_ops ops = {
    .lookup = op_lookup,
    .getattr = op_getattr,
};

int main(int argc, char** argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MOUNTPOINT MAJOR MINOR\n", argv[0]);
        return 2;
    }
    dax_rdev = makedev(strtoul(argv[2], NULL, 0), strtoul(argv[3], NULL, 0));
    // dev: device nodes work (root only); default_permissions: the kernel
    // checks the node's mode; allow_other: as a real deployment would.
    char* fargv[] = {argv[0], "-o", "dev,allow_other,default_permissions,fsname=daxrepro", NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
    struct fuse_session* se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
    if (!se || fuse_session_mount(se, argv[1]) != 0) {
        fprintf(stderr, "%s: cannot mount on %s\n", argv[0], argv[1]);
        return 1;
    }
    fuse_set_signal_handlers(se);
    printf("fuse_dax_repro: mounted %s, dax -> %u:%u\n", argv[1], major(dax_rdev), minor(dax_rdev));
    fflush(stdout);
    int rc = fuse_session_loop(se);
    fuse_remove_signal_handlers(se);
    fuse_session_unmount(se);
    fuse_session_destroy(se);
    return rc ? 1 : 0;
}
