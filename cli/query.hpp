// SPDX-License-Identifier: Apache-2.0
// Where list, show and resolve get their answers: from tagmemfs when it
// runs, so that they agree with /run/tagmem (a non-root caller could not
// read what root-only sysfs attributes say, and would call a tag unknown
// that the mount shows), else from a scan of the host.
#pragma once

#include "result.hpp"
#include "tag_record.hpp"
#include "uuid.hpp"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

namespace tagmem::cli {

struct QueryOptions {
    std::optional<std::string> config_path; // implies scan: the daemon has its own
    std::string mount_point = "/run/tagmem";
    std::string socket_path; // empty: <mount point>.sock
    bool scan = false;       // never ask the daemon

    std::string socket() const { return socket_path.empty() ? mount_point + ".sock" : socket_path; }
};

// The scan_to_json() object: tags, untagged, rejected, config_errors.
Result<nlohmann::json> query_list(const QueryOptions& opt);
// The tag_to_json() object of one tag; nullopt when no device carries it.
Result<std::optional<nlohmann::json>> query_tag(const QueryOptions& opt, const Uuid& tag);
// A scan of the host under the configuration the options name, never the
// daemon's answer (tagmem cdi, which needs whole records).
Result<ScanResult> scan_locally(const QueryOptions& opt);

} // namespace tagmem::cli
