// SPDX-License-Identifier: Apache-2.0
// The CDI spec file tagmemfs keeps in a CDI directory (default /var/run/cdi,
// which podman, CRI-O, containerd and Docker read; core/cdi.hpp holds what
// goes in it).
//
// An engine may read the file at any moment, so it is never written in
// place: the new content goes to a hidden temporary file in the same
// directory (no .json suffix, so no engine reads it), is synced, and is
// renamed over the old one. The file is removed at a clean stop, and when no
// tag is usable (CDI refuses a spec without devices); after a crash it stays
// until the next start rewrites it.
#pragma once

#include "fd.hpp"
#include "result.hpp"

#include <string>

namespace tagmem {

class CdiFile {
  public:
    // Opens the directory, creating it (0755) if missing.
    static Result<CdiFile> open(const std::string& dir);
    CdiFile(CdiFile&&) noexcept = default;
    CdiFile& operator=(CdiFile&&) = delete;
    ~CdiFile(); // removes the file

    // Replaces the file's content atomically.
    Status write(const std::string& content);
    Status remove();
    std::string path() const;

  private:
    CdiFile(Fd dir, std::string dir_path) : dir_(std::move(dir)), dir_path_(std::move(dir_path)) {}
    Fd dir_;
    std::string dir_path_;
};

} // namespace tagmem
