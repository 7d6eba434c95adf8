// SPDX-License-Identifier: Apache-2.0
#include "query.hpp"

#include "watch_client.hpp"

#include "config.hpp"
#include "discovery.hpp"
#include "host_os.hpp"
#include "json_output.hpp"

#include <fmt/format.h>

#include <unistd.h>

#include <cstdio>

namespace tagmem::cli {
namespace {

// Long enough for a list of 100,000 tags from a busy daemon.
constexpr double kAnswerTimeoutS = 30;

// The daemon's answer, or nullopt when none came. No socket at all means no
// daemon was started, and a scan is the normal way: said nothing. A socket
// that does not answer is worth a word, as the scan may see less.
std::optional<nlohmann::json> ask(const QueryOptions& opt, const nlohmann::json& request) {
    if (opt.scan || opt.config_path)
        return std::nullopt;
    auto reply = ask_daemon(opt.socket(), request, kAnswerTimeoutS);
    std::string why;
    if (!reply) {
        if (reply.error().code == ENOENT)
            return std::nullopt;
        why = reply.error().message;
    } else if (reply->contains("error") && reply->value("code", "") != "unknown-tag") {
        why = fmt::format("tagmemfs at {}: {}", opt.socket(), (*reply)["error"].dump());
    } else {
        return std::move(*reply);
    }
    fmt::print(stderr, "tagmem: {}; scanning the host instead\n", why);
    return std::nullopt;
}

// What the kernel shows only to root (physical ranges) is shown only to
// root, also when this process could read it some other way.
bool privileged() {
    return ::geteuid() == 0;
}

} // namespace

Result<ScanResult> scan_locally(const QueryOptions& opt) {
    HostOs& os = real_host_os();
    Config config = opt.config_path ? load_config(*opt.config_path, false, os)
                                    : load_config(kDefaultConfigPath, true, os);
    return scan_host(config, os);
}

Result<nlohmann::json> query_list(const QueryOptions& opt) {
    if (auto reply = ask(opt, {{"op", "list"}}))
        return std::move(*reply);
    auto result = scan_locally(opt);
    if (!result)
        return result.error();
    return scan_to_json(*result, privileged());
}

Result<std::optional<nlohmann::json>> query_tag(const QueryOptions& opt, const Uuid& tag) {
    if (auto reply = ask(opt, {{"op", "show"}, {"tag", tag.str()}})) {
        if (reply->contains("error"))
            return std::optional<nlohmann::json>();
        return std::optional(std::move(*reply));
    }
    auto result = scan_locally(opt);
    if (!result)
        return result.error();
    const TagRecord* record = result->find(tag);
    if (!record)
        return std::optional<nlohmann::json>();
    return std::optional(tag_to_json(*record, privileged()));
}

} // namespace tagmem::cli
