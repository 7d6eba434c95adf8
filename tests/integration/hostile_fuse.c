// SPDX-License-Identifier: Apache-2.0
// A hostile FUSE filesystem for test_online.py (issue 19), as any user
// could mount: `hostile_fuse <mount point> <major> <minor>` serves
//   claims-dax     a character device of the given number (a dax device's)
//   never-answers  a regular file whose GETATTR is never answered
// in the foreground until killed. Lookups and opens are answered at once,
// with no attribute caching, so that a stat() of never-answers through a
// /proc/<pid>/fd link would wait for a reply forever (in D state).
#define FUSE_USE_VERSION 312
#include <errno.h>
#include <fuse_lowlevel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

enum { kRoot = 1, kClaims = 2, kNever = 3 };
static dev_t claimed;

static void fill(fuse_ino_t ino, struct stat* st) {
    memset(st, 0, sizeof *st);
    st->st_ino = ino;
    st->st_nlink = 1;
    if (ino == kRoot) {
        st->st_mode = S_IFDIR | 0755;
        st->st_nlink = 2;
    } else if (ino == kClaims) {
        st->st_mode = S_IFCHR | 0666;
        st->st_rdev = claimed;
    } else {
        st->st_mode = S_IFREG | 0644;
    }
}

static void on_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    struct fuse_entry_param e;
    memset(&e, 0, sizeof e);
    if (parent != kRoot) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (strcmp(name, "claims-dax") == 0)
        e.ino = kClaims;
    else if (strcmp(name, "never-answers") == 0)
        e.ino = kNever;
    else {
        fuse_reply_err(req, ENOENT);
        return;
    }
    fill(e.ino, &e.attr);
    e.entry_timeout = 3600; // the name stays; the attributes are never cached
    fuse_reply_entry(req, &e);
}

static void on_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
    (void)fi;
    if (ino == kNever)
        return; // never answered: the caller waits, unkillably
    struct stat st;
    fill(ino, &st);
    fuse_reply_attr(req, &st, 0);
}

static void on_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
    (void)ino;
    fuse_reply_open(req, fi);
}

int main(int argc, char** argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: hostile_fuse <mount point> <major> <minor>\n");
        return 2;
    }
    claimed = makedev((unsigned)atoi(argv[2]), (unsigned)atoi(argv[3]));
    const struct fuse_lowlevel_ops ops = {
        .lookup = on_lookup, .getattr = on_getattr, .open = on_open};
    char* args_v[] = {argv[0], "-o", "fsname=hostile", NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, args_v);
    struct fuse_session* se = fuse_session_new(&args, &ops, sizeof ops, NULL);
    if (!se || fuse_set_signal_handlers(se) != 0 || fuse_session_mount(se, argv[1]) != 0)
        return 1;
    fprintf(stderr, "hostile_fuse: mounted\n");
    int rc = fuse_session_loop(se);
    fuse_session_unmount(se);
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    return rc ? 1 : 0;
}
