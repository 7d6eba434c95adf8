// SPDX-License-Identifier: Apache-2.0
#include "vm_follow.hpp"

#include "exit_codes.hpp"
#include "qmp_client.hpp"
#include "watch_client.hpp"

#include "vm_cxl.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <set>
#include <thread>

namespace tagmem::cli {
namespace {

using nlohmann::json;

class Forwarder {
  public:
    explicit Forwarder(const FollowTarget& t) : t_(t) {}

    // Each (start, length) once for the life of the follower: the daemon
    // repeats a tag's whole list in every health line.
    void forward(const json& bad_ranges) {
        for (const auto& [dpa, len] : vm::poison_ranges(bad_ranges, t_.size)) {
            if (!sent_.insert({dpa, len}).second)
                continue;
            auto r = qmp_execute(t_.qmp, vm::qmp_inject_poison(t_.device_id, dpa, len));
            if (!r) {
                fmt::print(stderr, "tagmem: tag {}: cannot forward the bad range at {}+{}: {}\n",
                           t_.tag.str(), dpa, len, r.error().message);
                sent_.erase({dpa, len}); // tried again at the next health line
                continue;
            }
            fmt::print("tag {}: bad range {}+{} forwarded to the guest as poison on {} at DPA "
                       "{:#x}\n",
                       t_.tag.str(), dpa, len, t_.device_id, dpa);
        }
        std::fflush(stdout);
    }

  private:
    const FollowTarget& t_;
    std::set<std::pair<std::uint64_t, std::uint64_t>> sent_;
};

} // namespace

int follow_attached(const QueryOptions& query, const FollowTarget& t) {
    const std::string socket =
        query.socket_path.empty() ? query.mount_point + ".sock" : query.socket_path;
    const std::string want = t.tag.str();
    Forwarder fwd(t);
    bool gone = false;
    std::string unusable; // empty: the tag was removed
    for (;;) {
        // A new connection starts with a snapshot: a tag degraded meanwhile
        // shows in its exists line, and its ranges are asked for.
        bool seen = false; // in this connection's snapshot
        auto ended = watch_stream(socket, [&](const json& j) {
            const std::string event = j.value("event", "");
            if (event == "overflow")
                return false; // reconnect: the snapshot tells where things stand
            if (event == "snapshot-end" && !seen) {
                // Not in the snapshot: gone while no stream was open, or a
                // tag this user may not open (never mentioned); show tells.
                auto shown = ask_daemon(socket, {{"op", "show"}, {"tag", want}}, 10);
                if (shown && shown->value("code", "") == "unknown-tag") {
                    gone = true;
                    return false;
                }
                return true;
            }
            if (j.value("tag", "") != want)
                return true;
            seen = true;
            if ((event == "changed" || event == "exists") && j.value("state", "") != "ready") {
                // Still listed but no longer usable (conflict, disabled,
                // system-ram, offered): vm-attach would refuse it now, and
                // the guest must not keep memory whose owner is in doubt.
                unusable = j.value("state", "");
                gone = true;
                return false;
            }
            if (event == "exists" && j.value("health", "ok") != "ok") {
                auto shown = ask_daemon(socket, {{"op", "show"}, {"tag", want}}, 10);
                if (shown)
                    fwd.forward(
                        shown->value("health", json::object()).value("bad_ranges", json::array()));
            } else if (event == "health") {
                fwd.forward(j.value("bad_ranges", json::array()));
            } else if (event == "removed") {
                gone = true;
                return false;
            }
            return true;
        });
        if (!ended) {
            fmt::print(stderr, "tagmem: following tag {}: {}\n", want, ended.error().message);
            return kExitError;
        }
        if (gone)
            break;
        if (!*ended) {
            fmt::print(stderr, "tagmem: following tag {}: tagmemfs closed the stream\n", want);
            return kExitError;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    // The host no longer has the tag (or no longer a usable one): the guest
    // must not keep using memory that may be someone else's now. One
    // request; a guest that holds the capacity refuses it until its users
    // let go (vm-detach asks again).
    const std::string why =
        unusable.empty() ? "left the host" : fmt::format("is {} on the host", unusable);
    auto r = qmp_execute(t.qmp, vm::qmp_release_capacity(t.device_id, want, t.size));
    if (!r && r.error().code == kQmpErrorReply &&
        r.error().message.find("non-existing") != std::string::npos) {
        fmt::print("tag {}: {}; the guest holds none of it (detached already)\n", want, why);
        return kExitOk;
    }
    if (!r) {
        fmt::print(stderr, "tagmem: tag {} {}; asking the guest to give it back: {}\n", want, why,
                   r.error().message);
        return kExitNoQmp;
    }
    fmt::print("tag {}: {}; the guest was asked to give it back (vm-detach tells whether it "
               "did)\n",
               want, why);
    return kExitOk;
}

} // namespace tagmem::cli
