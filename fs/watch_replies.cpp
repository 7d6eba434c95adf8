// SPDX-License-Identifier: Apache-2.0
// What the watch socket says: requests, the watch stream with its snapshot
// and per-client seq, wait, list, show and stats (docs/watch-protocol.md).
// Connections, limits and I/O are in watch_server.cpp.
#include "watch_server.hpp"

#include "json_output.hpp"
#include "log.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>

namespace tagmem {
namespace {

// Room reserved for the ,"seq":N} an event held during a snapshot gets.
constexpr std::size_t kSeqRoom = 32;
// A snapshot is rendered as the watcher reads it, never more than this far
// ahead: 100,000 tags need not sit in memory for a client that reads slowly.
constexpr std::size_t kSnapshotAhead = 64u << 10;
constexpr std::size_t kSnapshotStep = 256; // records looked at per wakeup

// Strings from sysfs need not be UTF-8; a reply must still be JSON.
std::string to_line(const nlohmann::json& j) {
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// An event line without its closing brace, so that each watcher's own seq
// can be appended (nlohmann orders keys, so "seq" would come last anyway).
// `health` events carry the tag's health (offsets within its data, never
// physical addresses); `exists` lines say "health":"degraded" for a tag that
// is, so a snapshot tells a waiter where things stand.
// A `removed` or `changed` line of a tag whose CDI devices stop meaning its
// device says which, and the device number containers started with them
// hold (core/cdi.hpp, CdiRevocation). Every line of a tag whose DCD capacity
// the orchestrator asked back says "release_requested":true.
std::string event_prefix(const char* event, const Uuid& tag, const std::string& device,
                         const std::string& state, bool release_requested,
                         const TagHealth* health = nullptr, bool full_health = false,
                         const CdiRevocation* revoked = nullptr) {
    nlohmann::json j{{"event", event}, {"tag", tag.str()}, {"device", device}, {"state", state}};
    if (release_requested)
        j["release_requested"] = true;
    if (revoked)
        j["cdi_revoked"] = {
            {"devices", revoked->names},
            {"devno", fmt::format("{}:{}", revoked->devno.major, revoked->devno.minor)}};
    if (full_health) {
        auto h = health_to_json(health);
        j["health"] = h["status"];
        j["bad_ranges"] = std::move(h["bad_ranges"]);
        if (h.contains("reason"))
            j["reason"] = std::move(h["reason"]);
    } else if (health && !health->ok()) {
        j["health"] = health->status();
    }
    std::string line = to_line(j);
    line.pop_back();
    return line;
}

std::string with_seq(const std::string& prefix, std::uint64_t seq) {
    return fmt::format("{},\"seq\":{}}}", prefix, seq);
}

} // namespace

void WatchServer::on_request(Client& c, const std::string& line) {
    auto req = parse_request(line);
    if (!req) {
        ++counters_.bad_requests;
        return fail(c, req.error().message);
    }
    const bool privileged = c.uid == 0;
    switch (req->op) {
    case WatchOp::watch: return start_watch(c);
    case WatchOp::wait: {
        c.phase = Phase::waiting;
        c.waiting = *req->tag;
        // Already usable: answer at once. The check and the registration
        // happen on the thread that publishes changes, so no event can
        // slip between.
        if (auto r = src_.tree->find(*req->tag); r && r->usable() && may_see(c, r->access))
            reply_and_close(c, ready_line(*r));
        return;
    }
    case WatchOp::stats:
        if (!privileged)
            return fail(c, "stats are for root");
        return reply_and_close(c, stats_reply());
    case WatchOp::list: {
        const std::string& text = list_reply(privileged);
        // One copy per client: bounded by the global output budget.
        if (queued_total_ + text.size() > limits_.max_queue_total)
            return fail(c, "the server is busy; try again");
        return reply_and_close(c, text);
    }
    case WatchOp::show: {
        auto r = src_.tree->find(*req->tag);
        if (!r)
            return reply_and_close(
                c, to_line({{"error", fmt::format("no device carries tag {}", req->tag->str())},
                            {"code", "unknown-tag"}}));
        return reply_and_close(c, to_line(tag_to_json(*r, privileged)));
    }
    }
}

// The watcher first gets the tags as they are now, then every change: a
// tag that existed before it connected cannot be missed.
void WatchServer::start_watch(Client& c) {
    c.phase = Phase::watching;
    c.snapshot = records();
    c.snapshot_next = 0;
    write_some(c);
}

void WatchServer::continue_snapshot(Client& c) {
    const Records& recs = *c.snapshot;
    for (std::size_t step = 0; step < kSnapshotStep && c.out.size() - c.out_off < kSnapshotAhead;
         ++step) {
        if (c.snapshot_next < recs.size()) {
            const auto& r = recs[c.snapshot_next++];
            if (r && may_see(c, r->access))
                enqueue(c, with_seq(event_prefix("exists", r->tag,
                                                 r->device() ? r->device()->dev.name : "",
                                                 to_string(r->state), r->release_requested != 0,
                                                 r->health.get()),
                                    ++c.seq));
            continue;
        }
        enqueue(c, with_seq("{\"event\":\"snapshot-end\"", ++c.seq));
        queued_total_ -= c.held_bytes;
        c.held_bytes = 0;
        for (const auto& prefix : c.held)
            enqueue(c, with_seq(prefix, ++c.seq));
        c.held.clear();
        c.snapshot.reset();
        return;
    }
}

void WatchServer::deliver(Client& c, const std::string& prefix) {
    if (c.snapshot) {
        c.held.push_back(prefix);
        c.held_bytes += prefix.size() + kSeqRoom;
        queued_total_ += prefix.size() + kSeqRoom;
    } else {
        enqueue(c, with_seq(prefix, ++c.seq));
    }
    if (c.queued() > limits_.max_queue)
        overflow(c, "reads too slowly");
}

void WatchServer::publish(const std::vector<TagEvent>& events,
                          const std::vector<CdiRevocation>& revoked) {
    invalidate();
    if (clients_.empty())
        return;
    for (const auto& e : events) {
        const CdiRevocation* revokes = nullptr;
        if (e.kind == TagEventKind::removed || e.kind == TagEventKind::changed)
            for (const auto& r : revoked)
                if (r.tag == e.tag)
                    revokes = &r;
        std::string prefix;
        for (auto& [fd, c] : clients_) {
            if (!c.fd || !may_see(c, e.access))
                continue;
            if (c.phase == Phase::watching) {
                if (prefix.empty())
                    prefix = event_prefix(to_string(e.kind), e.tag, e.device, e.state,
                                          e.release_requested, e.health.get(),
                                          e.kind == TagEventKind::health, revokes);
                deliver(c, prefix);
            }
            if (c.phase == Phase::waiting && c.waiting == e.tag &&
                e.kind != TagEventKind::removed && e.state == "ready") {
                if (auto r = src_.tree->find(e.tag); r && r->usable())
                    reply_and_close(c, ready_line(*r));
            }
        }
        enforce_total_budget();
    }
    // Start writing at once rather than one poll later; still one bounded
    // write per client.
    for (auto& [fd, c] : clients_)
        if (c.fd && c.out.size() > c.out_off)
            write_some(c);
    reap();
}

bool WatchServer::may_see(const Client& c, const Access& a) const {
    if (c.uid == 0)
        return true;
    if (c.uid == a.uid)
        return (a.mode & 0600) != 0;
    if (std::find(c.groups.begin(), c.groups.end(), a.gid) != c.groups.end())
        return (a.mode & 0060) != 0;
    return (a.mode & 0006) != 0;
}

std::string WatchServer::ready_line(const TagRecord& r) const {
    const std::string tag = r.tag.str();
    return to_line({{"event", "ready"},
                    {"tag", tag},
                    {"device", r.device() ? r.device()->dev.name : ""},
                    {"path", fmt::format("{}/{}/data", src_.mount_point, tag)}});
}

// Rendered once per host change and shared by every client that asks, so
// that a flood of list requests costs a copy each, not a render each.
const std::string& WatchServer::list_reply(bool privileged) {
    auto& slot = cache_.list[privileged ? 1 : 0];
    if (!slot) {
        ScanResult scan = src_.snapshot ? src_.snapshot() : ScanResult{};
        slot = std::make_shared<const std::string>(to_line(scan_to_json(scan, privileged)));
    }
    return *slot;
}

std::shared_ptr<const WatchServer::Records> WatchServer::records() {
    if (!cache_.records)
        cache_.records = std::make_shared<const Records>(src_.tree->records());
    return cache_.records;
}

std::string WatchServer::stats_reply() const {
    auto j = nlohmann::json::parse(src_.stats ? src_.stats() : "{}", nullptr, false);
    if (!j.is_object())
        j = nlohmann::json::object();
    const auto& n = counters_;
    j["watch"] = {{"clients", clients_.size()},    {"queued_bytes", queued_total_},
                  {"accepted", n.accepted},        {"refused", n.refused},
                  {"evicted", n.evicted},          {"shed", n.shed},
                  {"timed_out", n.timed_out},      {"overflowed", n.overflowed},
                  {"bad_requests", n.bad_requests}};
    return to_line(j);
}

} // namespace tagmem
