// SPDX-License-Identifier: Apache-2.0
// The CDI spec files tagmemfs keeps in a CDI directory (default /var/run/cdi,
// which podman, CRI-O, containerd and Docker read; core/cdi.hpp holds what
// goes in them): one file per usable tag, tagmem-<uuid>.json, so that a
// change of one tag costs the same at 10 tags as at 10,000.
//
// An engine may read a file at any moment, so none is written in place: the
// new content goes to a hidden temporary file in the same directory (no
// .json suffix, so no engine reads it), is synced, and is renamed over the
// old one. The files are removed when their tag stops being usable and at a
// clean stop; after a crash they stay until the next start, which removes
// those whose tag is no longer usable.
//
// One tagmemfs per CDI directory: two daemons (the service and an fstab
// mount, say) would write the same device names with their own paths, and
// the one that stops would remove the other's files. The first takes
// flock(LOCK_EX) on <dir>/.tagmem.lock (hidden, no .json: no engine reads
// it) and keeps it while it runs; a second one is refused the directory
// and writes nothing there (docs/containers.md). The kernel drops the lock
// when its holder dies, however it dies.
#pragma once

#include "fd.hpp"
#include "result.hpp"
#include "uuid.hpp"

#include <functional>
#include <set>
#include <string>

namespace tagmem {

class CdiDir {
  public:
    // Opens the directory, creating it (0755) if missing, and takes its
    // lock for the daemon of mount_point (named in the lock file, for the
    // message a second daemon gives). EWOULDBLOCK when another live
    // tagmemfs holds it.
    static Result<CdiDir> open(const std::string& dir, const std::string& mount_point);
    CdiDir(CdiDir&&) noexcept = default;
    CdiDir& operator=(CdiDir&&) = delete;
    ~CdiDir(); // removes every file it wrote, then its lock file

    // Replaces the tag's file atomically.
    Status write(const Uuid& tag, const std::string& content);
    Status remove(const Uuid& tag);
    // Removes the files of tagmemfs's pattern (and its former single spec)
    // that a previous run left and whose tag `keep` does not want: regular
    // files owned by this user only, never what a link leads to.
    void remove_stale(const std::function<bool(const Uuid&)>& keep);
    std::string path(const Uuid& tag) const;
    const std::string& dir() const { return dir_path_; }

  private:
    CdiDir(Fd dir, Fd lock, std::string dir_path)
        : dir_(std::move(dir)), lock_(std::move(lock)), dir_path_(std::move(dir_path)) {}
    Status unlink_owned(const std::string& name);
    Fd dir_;
    Fd lock_; // flock'ed while this daemon writes the directory
    std::string dir_path_;
    std::set<Uuid> written_; // the files to remove at a clean stop
};

} // namespace tagmem
