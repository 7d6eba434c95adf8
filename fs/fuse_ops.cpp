// SPDX-License-Identifier: Apache-2.0
#include "fuse_ops.hpp"

#include "log.hpp"
#include "tag_tree.hpp"

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

namespace tagmem {
namespace {

FsContext& ctx(fuse_req_t req) {
    return *static_cast<FsContext*>(fuse_req_userdata(req));
}

// Every handler runs inside checked(): an exception becomes EIO and a log
// line, never an unwinding through libfuse's C frames. fn must reply.
template <typename Fn> void checked(fuse_req_t req, const char* op, Fn&& fn) noexcept {
    try {
        fn();
    } catch (const std::exception& e) {
        log::error("{}: internal error: {}", op, e.what());
        fuse_reply_err(req, EIO);
    } catch (...) {
        log::error("{}: internal error", op);
        fuse_reply_err(req, EIO);
    }
}

struct stat to_stat(const NodeAttr& a) {
    struct stat st {};
    st.st_ino = a.ino;
    st.st_mode = a.mode;
    st.st_nlink = a.nlink;
    st.st_uid = a.uid;
    st.st_gid = a.gid;
    st.st_size = static_cast<off_t>(a.size);
    st.st_rdev = makedev(a.rdev.major, a.rdev.minor);
    st.st_blksize = 4096;
    st.st_blocks = static_cast<blkcnt_t>((a.size + 511) / 512);
    st.st_atim = st.st_mtim = st.st_ctim = a.mtime;
    return st;
}

fuse_entry_param to_entry(const NodeAttr& a, double timeout) {
    fuse_entry_param e{};
    e.ino = a.ino;
    e.attr = to_stat(a);
    e.attr_timeout = timeout;
    e.entry_timeout = timeout;
    return e;
}

void op_init(void* userdata, fuse_conn_info* conn) {
    auto& c = *static_cast<FsContext*>(userdata);
    c.no_open = (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) != 0;
    c.no_opendir = (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) != 0;
    if (!c.no_open || !c.no_opendir)
        log::info("this kernel asks before every {}{}{}; each is answered",
                  !c.no_open ? "open" : "", !c.no_open && !c.no_opendir ? " and every " : "",
                  !c.no_opendir ? "opendir" : "");
    // READDIRPLUS always (not _AUTO): `ls -l` then needs no LOOKUP per entry.
    if (conn->capable & FUSE_CAP_READDIRPLUS)
        conn->want |= FUSE_CAP_READDIRPLUS;
    conn->want &= ~static_cast<unsigned>(FUSE_CAP_READDIRPLUS_AUTO);
    if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
        conn->want |= FUSE_CAP_CACHE_SYMLINKS;
    if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
        conn->want |= FUSE_CAP_PARALLEL_DIROPS;
    // Content changes are announced with notify_inval_inode; the kernel need
    // not compare mtimes to guess.
    conn->want &= ~static_cast<unsigned>(FUSE_CAP_AUTO_INVAL_DATA);
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    checked(req, "lookup", [&] {
        auto& c = ctx(req);
        ++c.counters.lookup;
        auto attr = c.tree->lookup(parent, name);
        if (!attr) {
            if (attr.error().code != ENOENT) {
                fuse_reply_err(req, attr.error().code);
                return;
            }
            // A negative entry: the kernel remembers the miss until the
            // daemon invalidates it when the name appears.
            fuse_entry_param e{};
            e.ino = 0;
            e.entry_timeout = c.timeout_s;
            fuse_reply_entry(req, &e);
            return;
        }
        auto e = to_entry(*attr, c.timeout_s);
        fuse_reply_entry(req, &e);
    });
}

void op_forget(fuse_req_t req, fuse_ino_t, uint64_t) {
    fuse_reply_none(req);
}
void op_forget_multi(fuse_req_t req, size_t, fuse_forget_data*) {
    fuse_reply_none(req);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    checked(req, "getattr", [&] {
        auto& c = ctx(req);
        ++c.counters.getattr;
        auto attr = c.tree->getattr(ino);
        if (!attr) {
            fuse_reply_err(req, attr.error().code);
            return;
        }
        auto st = to_stat(*attr);
        fuse_reply_attr(req, &st, c.timeout_s);
    });
}

void op_readlink(fuse_req_t req, fuse_ino_t ino) {
    checked(req, "readlink", [&] {
        auto& c = ctx(req);
        ++c.counters.readlink;
        auto target = c.tree->read_link(ino);
        if (!target)
            fuse_reply_err(req, target.error().code);
        else
            fuse_reply_readlink(req, target->c_str());
    });
}

void op_opendir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
    auto& c = ctx(req);
    ++c.counters.opendir;
    // ENOSYS once, and the kernel opens directories by itself from then on,
    // caching their listings (FOPEN_CACHE_DIR) until a notification drops
    // them: no OPENDIR/RELEASEDIR round trip per `ls`. Only where the
    // kernel says it can: elsewhere ENOSYS fails the opendir.
    if (c.no_opendir) {
        fuse_reply_err(req, ENOSYS);
        return;
    }
    fi->cache_readdir = 1;
    fi->keep_cache = 1;
    fuse_reply_open(req, fi);
}

void readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus) {
    checked(req, plus ? "readdirplus" : "readdir", [&] {
        auto& c = ctx(req);
        ++c.counters.readdir;
        std::string buf(size, '\0');
        std::size_t used = 0;
        auto status = c.tree->readdir(ino, static_cast<std::uint64_t>(off), [&](const DirEntry& d) {
            std::string name(d.name);
            std::size_t need;
            char* at = buf.data() + used;
            if (plus) {
                auto e = to_entry(d.attr, c.timeout_s);
                need = fuse_add_direntry_plus(req, at, size - used, name.c_str(), &e,
                                              static_cast<off_t>(d.cookie));
            } else {
                auto st = to_stat(d.attr);
                need = fuse_add_direntry(req, at, size - used, name.c_str(), &st,
                                         static_cast<off_t>(d.cookie));
            }
            if (need > size - used)
                return false; // does not fit: the kernel asks again from here
            used += need;
            return true;
        });
        if (!status)
            fuse_reply_err(req, status.error().code);
        else
            fuse_reply_buf(req, buf.data(), used);
    });
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
    readdir_common(req, ino, size, off, false);
}

void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
    readdir_common(req, ino, size, off, true);
}

void op_open(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
    auto& c = ctx(req);
    ++c.counters.open;
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
        ++c.counters.refused;
        fuse_reply_err(req, EROFS);
        return;
    }
    // As for directories: ENOSYS once, and opens cost no round trip; the
    // kernel keeps file pages (FOPEN_KEEP_CACHE) until a change invalidates
    // them. Each READ renders the file afresh; metadata fits in one page.
    if (c.no_open) {
        fuse_reply_err(req, ENOSYS);
        return;
    }
    fi->keep_cache = 1;
    fuse_reply_open(req, fi);
}

void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
    checked(req, "read", [&] {
        auto& c = ctx(req);
        ++c.counters.read;
        auto text = c.tree->contents(ino);
        if (!text) {
            fuse_reply_err(req, text.error().code);
            return;
        }
        auto offset = static_cast<std::size_t>(off);
        if (off < 0 || offset >= text->size()) {
            fuse_reply_buf(req, nullptr, 0);
            return;
        }
        fuse_reply_buf(req, text->data() + offset, std::min(size, text->size() - offset));
    });
}

void op_statfs(fuse_req_t req, fuse_ino_t) {
    checked(req, "statfs", [&] {
        auto& c = ctx(req);
        ++c.counters.statfs;
        struct statvfs sv {};
        sv.f_bsize = 4096;
        sv.f_frsize = 4096;
        sv.f_files = 1 + c.tree->tag_count() * 6;
        sv.f_namemax = 255;
        sv.f_flag = ST_RDONLY | ST_NOSUID;
        fuse_reply_statfs(req, &sv);
    });
}

// The namespace is read-only: mutations fail with EROFS (the mount is also
// `ro`, so the kernel normally answers before asking us).
void refuse(fuse_req_t req) {
    ++ctx(req).counters.refused;
    fuse_reply_err(req, EROFS);
}
void op_setattr(fuse_req_t req, fuse_ino_t, struct stat*, int, fuse_file_info*) {
    refuse(req);
}
void op_mknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) {
    refuse(req);
}
void op_mkdir(fuse_req_t req, fuse_ino_t, const char*, mode_t) {
    refuse(req);
}
void op_unlink(fuse_req_t req, fuse_ino_t, const char*) {
    refuse(req);
}
void op_rmdir(fuse_req_t req, fuse_ino_t, const char*) {
    refuse(req);
}
void op_symlink(fuse_req_t req, const char*, fuse_ino_t, const char*) {
    refuse(req);
}
void op_rename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned) {
    refuse(req);
}
void op_link(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) {
    refuse(req);
}
void op_write(fuse_req_t req, fuse_ino_t, const char*, size_t, off_t, fuse_file_info*) {
    refuse(req);
}
void op_create(fuse_req_t req, fuse_ino_t, const char*, mode_t, fuse_file_info*) {
    refuse(req);
}
void op_setxattr(fuse_req_t req, fuse_ino_t, const char*, const char*, size_t, int) {
    refuse(req);
}
void op_removexattr(fuse_req_t req, fuse_ino_t, const char*) {
    refuse(req);
}
void op_fallocate(fuse_req_t req, fuse_ino_t, int, off_t, off_t, fuse_file_info*) {
    refuse(req);
}

fuse_lowlevel_ops make_ops() {
    fuse_lowlevel_ops ops{};
    ops.init = op_init;
    ops.lookup = op_lookup;
    ops.forget = op_forget;
    ops.forget_multi = op_forget_multi;
    ops.getattr = op_getattr;
    ops.readlink = op_readlink;
    ops.opendir = op_opendir;
    ops.readdir = op_readdir;
    ops.readdirplus = op_readdirplus;
    ops.open = op_open;
    ops.read = op_read;
    ops.statfs = op_statfs;
    ops.setattr = op_setattr;
    ops.mknod = op_mknod;
    ops.mkdir = op_mkdir;
    ops.unlink = op_unlink;
    ops.rmdir = op_rmdir;
    ops.symlink = op_symlink;
    ops.rename = op_rename;
    ops.link = op_link;
    ops.write = op_write;
    ops.create = op_create;
    ops.setxattr = op_setxattr;
    ops.removexattr = op_removexattr;
    ops.fallocate = op_fallocate;
    // getxattr/listxattr stay unset: the kernel learns ENOSYS once and stops
    // asking, which keeps `ls -l` free of xattr round trips.
    return ops;
}

} // namespace

const fuse_lowlevel_ops& tagmem_fuse_ops() {
    static const fuse_lowlevel_ops ops = make_ops();
    return ops;
}

} // namespace tagmem
