// SPDX-License-Identifier: Apache-2.0
#include "daemon.hpp"

#include "badblocks_watch.hpp"
#include "capabilities.hpp"
#include "cdi.hpp"
#include "cdi_file.hpp"
#include "claimer.hpp"
#include "config.hpp"
#include "cxl_poison.hpp"
#include "cxl_poison_watch.hpp"
#include "dc_region.hpp"
#include "fd.hpp"
#include "health.hpp"
#include "host_os.hpp"
#include "host_state.hpp"
#include "mount.hpp"
#include "mount_lock.hpp"
#include "node_dir.hpp"
#include "notify.hpp"
#include "release_requests.hpp"
#include "tag_tree.hpp"
#include "uevent_plan.hpp"
#include "watch_server.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <system_error>
#include <thread>
#include <tuple>

namespace tagmem {
namespace {

// Exit status when another tagmemfs serves the mount point (tagmemfs(8)).
constexpr int kExitMountPointTaken = 3;

// Written by the SIGHUP handler (async-signal-safe), read by the event thread.
std::atomic<int> g_rescan_fd{-1};

void on_sighup(int) {
    int fd = g_rescan_fd.load();
    if (fd >= 0) {
        std::uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(fd, &one, sizeof one);
    }
}

// SIGTERM/SIGINT: ours rather than libfuse's. libfuse 3.14's session loop
// checks "exited" and then waits on a semaphore; a signal between the two
// (seen when a stop arrives as the daemon starts serving) is lost and the
// daemon serves on. The handler ends the session and tells the event
// thread, which interrupts the main thread until the loop has returned.
std::atomic<fuse_session*> g_session{nullptr};
std::atomic<int> g_stop_fd{-1};

void on_stop(int) {
    if (fuse_session* se = g_session.load())
        fuse_session_exit(se); // a plain store, as libfuse's own handler does
    int fd = g_stop_fd.load();
    if (fd >= 0) {
        std::uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(fd, &one, sizeof one);
    }
}

void drain_eventfd(int fd) {
    std::uint64_t n = 0;
    [[maybe_unused]] auto r = ::read(fd, &n, sizeof n);
}

class Daemon {
  public:
    explicit Daemon(const DaemonOptions& o)
        : opt_(o), state_(real_host_os()), health_(real_host_os()) {}

    int run();

  private:
    std::string config_path() const {
        return opt_.config_path.empty() ? kDefaultConfigPath : opt_.config_path;
    }
    Config load(bool* ok) const {
        Config c = load_config(config_path(), opt_.config_path.empty(), real_host_os());
        *ok = c.errors.empty();
        for (const auto& e : c.errors)
            log::error("config: {}", e);
        return c;
    }
    void rescan(const char* why);
    void on_uevents();
    void publish(const TagDelta& delta, const char* why);
    // Offered DCD capacity that tagmem.conf leaves to tagmemfs is claimed as
    // devdax (core/claim.hpp) before it is published: the claimed devices
    // are read again and their records replace the offered ones, so a tag
    // tagmemfs claims is first seen ready, not offered then ready; a
    // failure is shown in the tag's reason (Claimer::shown).
    TagDelta with_claims(const TagDelta& delta);
    // SIGHUP: every offered tag is tried again, under the configuration
    // just read (a rescan republishes only what changed).
    void retry_claims();
    void write_cdi(const std::vector<Uuid>& tags);
    void event_loop();
    Status start_signals();
    // What failed to read (or a node that could not be made) is retried
    // with backoff until it succeeds; said once when it starts, once when
    // it ends.
    bool retry_wanted() const { return state_.needs_retry() || !node_failed_.empty(); }
    void retry();
    void note_health();
    // Memory errors (core/health.hpp): the record as shown, with its health.
    std::shared_ptr<const TagRecord> with_health(std::shared_ptr<const TagRecord> r) const;
    // Re-reads every region's badblocks (a rescan, an nd uevent).
    void rescan_badblocks(const char* why);
    // The bad ranges changed: republish the tags whose health did.
    void publish_health(const char* why);
    void log_badblock_failures();
    // A DCD Release Capacity event (cxl:cxl_dynamic_capacity) named `tag`:
    // a tag tagmemfs shows is marked as asked back (ReleaseRequests) and
    // republished at once; one it does not show is not kept.
    void note_release(const Uuid& tag, bool forced);
    void sync_badblocks();
    // CXL poison (fs/cxl_poison_watch.hpp): the tracefs instance, made at
    // start and tried again at each SIGHUP while it cannot be.
    bool open_cxl_poison(); // whether what tags see changed
    // Lists every memdev's poison, one at a time (core's list_poison);
    // returns whether tags may see a change.
    bool list_cxl_poison();
    // Takes what the ring buffers hold; returns whether tags may see a change.
    bool read_cxl_poison();
    bool take_cxl_poison(const CxlPoisonWatch::Batch& batch);

    DaemonOptions opt_;
    // First: released last, once the mount and the nodes are gone.
    std::optional<MountLock> lock_;
    Config config_;
    HostState state_;                                      // owned by the event thread once serving
    HealthTracker health_;                                 // event thread, as state_
    BadblocksWatch badblocks_;                             // its notifications
    std::map<std::string, std::string> badblock_failures_; // as last logged
    CxlPoisonTracker poison_;                              // event thread, as state_
    std::unique_ptr<CxlPoisonWatch> cxl_;                  // null: no CXL poison events
    std::string cxl_unavailable_;                          // why, as last logged
    std::size_t poison_dropped_logged_ = 0;
    std::optional<NodeDir> nodes_;
    std::unique_ptr<TagTree> tree_;
    FsContext context_;
    fuse_session* se_ = nullptr;
    std::optional<UeventMonitor> uevents_;
    std::set<std::string> awaiting_bind_; // dax devices added, not yet bound
    std::optional<WatchServer> watchers_;
    Claimer claimer_;           // event thread, as state_
    ReleaseRequests releases_;  // event thread, as state_
    CdiSet cdi_devices_;        // follows every delta, from the first scan on
    std::optional<CdiDir> cdi_; // open once the mount serves
    Fd rescan_event_;
    Fd stop_event_;   // main -> event thread: the loop is over, return
    Fd stop_request_; // signal handler -> event thread: stop the loop
    pthread_t main_thread_{};
    // Tags whose device node could not be made: the record to publish once
    // it can be (the tree shows them as no-node meanwhile).
    std::map<Uuid, std::shared_ptr<const TagRecord>> node_failed_;
    bool failing_ = false; // a failure was logged and is being retried
};

// The record shown for a ready tag whose node could not be made: never
// "ready" with nothing behind its data.
std::shared_ptr<const TagRecord> without_node(const TagRecord& r, const std::string& why) {
    auto shown = std::make_shared<TagRecord>(r);
    shown->state = TagState::no_node;
    shown->reason = fmt::format("its device node cannot be made ({}); retrying", why);
    return shown;
}

// Applies a delta to the tree, then tells the kernel, then the watchers: a
// watcher that hears of a tag finds it in the mount.
void Daemon::publish(const TagDelta& claimable, const char* why) {
    if (claimable.empty())
        return;
    const TagDelta delta = with_claims(claimable);
    // Nodes first, so that a data link never points at nothing; nodes that
    // go, last, once no name leads to them any more.
    // The node is made with the device number read_device verified against
    // /dev and sysfs in the scan that produced the record.
    std::vector<std::string> stale;
    TagDelta shown = delta;
    for (auto& r : shown.upserts)
        r = releases_.shown(claimer_.shown(with_health(std::move(r))));
    for (auto& r : shown.upserts) {
        const bool failed_before = node_failed_.erase(r->tag) > 0;
        if (!r->usable()) {
            stale.push_back(r->tag.str());
            continue;
        }
        const auto& a = r->access;
        if (auto ok = nodes_->put(r->tag.str(), r->device()->dev.devno, a.uid, a.gid, a.mode);
            !ok) {
            if (!failed_before)
                log::error("tag {}: {}; not ready until it can be made", r->tag.str(),
                           ok.error().message);
            node_failed_.emplace(r->tag, r);
            r = without_node(*r, ok.error().message);
            stale.push_back(r->tag.str()); // an older node must not stay behind
        }
    }
    for (const auto& tag : delta.removals) {
        node_failed_.erase(tag);
        releases_.forget(tag);
        stale.push_back(tag.str());
    }
    auto changes = tree_->apply(shown);
    if (se_)
        notify_kernel(se_, changes);
    // Only now may the replaced inodes die: until the kernel forgot them, a
    // path it still resolves to one must find the old tag whole.
    tree_->retire();
    // After the tree (a new tag's directory exists before an engine can
    // bind it), before its node goes (a removed tag leaves the spec first).
    // No-node tags are not usable: not in the spec.
    const auto revoked = cdi_devices_.revoked_by(shown);
    for (const auto& r : revoked)
        log::info("tag {}: CDI device {} revoked; containers started with it still hold {}:{}",
                  r.tag.str(), fmt::join(r.names, ", "), r.devno.major, r.devno.minor);
    if (auto changed = cdi_devices_.apply(shown); !changed.empty() && cdi_)
        write_cdi(changed);
    for (const auto& name : stale)
        nodes_->remove(name);
    // The first scan's tags are summed up by rescan(); one line each for
    // 100,000 tags would flood the journal at every boot.
    const bool first = std::string_view(why) == "start";
    for (const auto& e : changes.events)
        log::at(first ? log::Level::debug : log::Level::info, "tag {} {} ({}{}{}) [{}]",
                e.tag.str(), to_string(e.kind), e.state, e.device.empty() ? "" : ", ", e.device,
                why);
    if (watchers_)
        watchers_->publish(changes.events, revoked);
}

void Daemon::retry_claims() {
    claimer_.forget();
    TagDelta offered;
    for (auto& r : state_.snapshot().tags)
        if (r.state == TagState::offered)
            offered.upserts.push_back(std::make_shared<const TagRecord>(std::move(r)));
    publish(offered, "claim");
}

TagDelta Daemon::with_claims(const TagDelta& delta) {
    // Capacity the orchestrator asked back is not claimed again (after
    // `tagmem release` gave it up, or while the kernel still offers it).
    TagDelta wanted;
    for (const auto& r : delta.upserts)
        if (!releases_.requested(r->tag))
            wanted.upserts.push_back(r);
    auto outcome = claimer_.claim(wanted, config_, real_host_os());
    if (outcome.claimed.empty() && outcome.failed.empty())
        return delta;
    // The kernel raises no uevent for a `uuid` write, and a bind event may
    // come late or never (no udev, a lost event): read the devices now.
    TagDelta read = outcome.claimed.empty() ? TagDelta{} : state_.refresh(outcome.claimed);
    std::map<Uuid, std::shared_ptr<const TagRecord>> fresh;
    for (auto& r : read.upserts)
        fresh.emplace(r->tag, std::move(r));
    TagDelta out;
    out.removals = delta.removals;
    out.removals.insert(out.removals.end(), read.removals.begin(), read.removals.end());
    for (const auto& r : delta.upserts) {
        auto it = fresh.find(r->tag);
        if (it == fresh.end()) {
            out.upserts.push_back(r); // a failure: Claimer::shown says why
            continue;
        }
        out.upserts.push_back(std::move(it->second));
        fresh.erase(it);
    }
    for (auto& [tag, r] : fresh)
        out.upserts.push_back(std::move(r));
    return out;
}

// Only the files of the tags whose spec changed: a change costs one small
// file (two when a name becomes shared or unshared), whatever the number of
// tags (docs/containers.md).
void Daemon::write_cdi(const std::vector<Uuid>& tags) {
    const auto t0 = std::chrono::steady_clock::now();
    const CdiPaths paths{opt_.mount_point, nodes_->path()};
    std::size_t bytes = 0;
    for (const auto& tag : tags) {
        auto spec = cdi_devices_.spec_of(tag, paths);
        auto done = spec ? cdi_->write(tag, *spec) : cdi_->remove(tag);
        if (!done)
            log::error("CDI spec: {}", done.error().message);
        bytes += spec ? spec->size() : 0;
    }
    log::debug(
        "CDI specs in {}: {} files, {} bytes in {:.2f} ms", cdi_->dir(), tags.size(), bytes,
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
}

std::shared_ptr<const TagRecord> Daemon::with_health(std::shared_ptr<const TagRecord> r) const {
    TagHealth h = health_.health_of(*r);
    // The same memory may be known bad by both sources only in theory
    // (NVDIMM regions are not CXL memdevs): the lists are merged as they are.
    auto cxl = poison_.health_of(*r);
    for (auto& b : cxl.bad)
        h.bad.push_back(b);
    std::sort(h.bad.begin(), h.bad.end());
    for (auto& why : cxl.incomplete)
        h.incomplete.push_back(std::move(why));
    std::sort(h.incomplete.begin(), h.incomplete.end());
    const bool had = r->health && !r->health->ok();
    if (h.ok() && !had)
        return r;
    if (had && *r->health == h)
        return r;
    auto shown = std::make_shared<TagRecord>(*r);
    shown->health = h.ok() ? nullptr : std::make_shared<const TagHealth>(std::move(h));
    return shown;
}

void Daemon::log_badblock_failures() {
    const auto& now = health_.failures();
    for (const auto& [what, why] : now)
        if (!badblock_failures_.contains(what))
            log::warning("memory errors: {}; keeping what was last read", why);
    for (const auto& [what, why] : badblock_failures_)
        if (!now.contains(what))
            log::info("memory errors: {} reads again", what);
    badblock_failures_ = now;
}

void Daemon::sync_badblocks() {
    std::map<std::string, std::string> paths;
    for (const auto& region : health_.regions())
        paths.emplace(region, health_.badblocks_path(region));
    badblocks_.sync(paths);
}

bool Daemon::open_cxl_poison() {
    auto w = CxlPoisonWatch::open(real_host_os(), trace_instance_name(opt_.mount_point));
    if (!w && w.error().code == EPROTO) {
        // The kernel reports CXL poison, in a form tagmem cannot read: the
        // tags in CXL memory are not ok, they are not known.
        if (w.error().message != cxl_unavailable_)
            log::error("CXL poison: {}; the tags in CXL memory show health \"incomplete\"",
                       w.error().message);
        cxl_unavailable_ = w.error().message;
        auto ranges = cxl_region_ranges(real_host_os());
        poison_.set_cxl_ranges(ranges ? std::optional(std::move(*ranges)) : std::nullopt);
        return poison_.set_incomplete("", "CXL poison: the kernel's cxl_poison event has a "
                                          "format tagmem cannot read");
    }
    if (!w) {
        // Said once, and again only when the reason changes.
        if (w.error().message != cxl_unavailable_)
            log::info("CXL poison: {}; no CXL memory errors (NVDIMM bad blocks are unaffected)",
                      w.error().message);
        cxl_unavailable_ = w.error().message;
        return false;
    }
    cxl_ = std::move(*w);
    cxl_unavailable_.clear();
    log::info("CXL poison: reading cxl:cxl_poison events from {}{}", cxl_->instance(),
              cxl_->reused() ? " (left by an earlier run; reused)" : "");
    return false;
}

bool Daemon::take_cxl_poison(const CxlPoisonWatch::Batch& b) {
    bool changed = false;
    const auto now = std::time(nullptr);
    for (const auto& r : b.records)
        changed |= poison_.apply(r, now);
    for (const auto& e : b.dc_events) {
        using Type = DcCapacityEvent::DcEventType;
        if ((e.type == Type::release || e.type == Type::forced_release) && !e.tag.is_nil())
            note_release(e.tag, e.type == Type::forced_release);
    }
    // The reason only: the decoder never puts a physical address in it.
    constexpr std::size_t kLogged = 10; // per read: a flood is counted, not logged
    for (std::size_t i = 0; i < std::min(b.malformed.size(), kLogged); ++i)
        log::warning("CXL poison: ignored a record of {}: {}", cxl_->instance(), b.malformed[i]);
    if (b.malformed.size() > kLogged)
        log::warning("CXL poison: ignored {} more malformed records of {}",
                     b.malformed.size() - kLogged, cxl_->instance());
    if (b.error)
        log::warning("CXL poison: {}", b.error->message);
    if (b.ended)
        log::warning("CXL poison: a ring buffer of {} ended", cxl_->instance());
    if (poison_.dropped() > poison_dropped_logged_) {
        log::warning("CXL poison: {} records not kept (at most {} memdevs, {} records each)",
                     poison_.dropped() - poison_dropped_logged_, CxlPoisonTracker::kMaxMemdevs,
                     CxlPoisonTracker::kMaxRecords);
        poison_dropped_logged_ = poison_.dropped();
    }
    return changed;
}

bool Daemon::read_cxl_poison() {
    if (!cxl_)
        return false;
    auto b = cxl_->read();
    bool changed = take_cxl_poison(b);
    if (b.error || b.ended) {
        // A pipe that fails or has ended would wake poll at once, again and
        // again (a spinning event loop, a flooded journal): it is closed and
        // the instance removed. The poison known so far stays (a failed read
        // is not cleared memory); SIGHUP sets the instance up anew.
        log::warning("CXL poison: no more CXL events are read until SIGHUP "
                     "(systemctl reload tagmemfs)");
        cxl_.reset();
        // Poison that comes now is not seen: not ok until a listing is whole.
        changed |= poison_.set_incomplete("", "CXL poison: the trace pipe ended; no CXL events "
                                              "are read until SIGHUP");
        return changed;
    }
    if (b.lost > 0) {
        // The ring buffer overwrote records nobody read: not known until
        // every list is read whole again. Ask again.
        log::warning("CXL poison: trace events were lost; listing the poison again");
        changed |= poison_.set_incomplete("", "CXL poison: trace events were lost; "
                                              "records may be missing");
        changed |= list_cxl_poison();
    }
    return changed;
}

bool Daemon::list_cxl_poison() {
    if (!cxl_)
        return false;
    // One memdev at a time, the pipe read dry after each (core's
    // list_poison): a list with events lost keeps the memdev's last one.
    auto r = list_poison(real_host_os(), *cxl_, poison_,
                         [this](const PoisonBatch& b) { return take_cxl_poison(b); });
    for (const auto& why : r.listing.failed)
        log::warning("CXL poison: {}", why);
    for (const auto& name : r.incomplete)
        log::warning("CXL poison: the poison list of {} was not read whole (trace events "
                     "lost); its last complete list is kept and its tags are not ok",
                     name);
    log::info("CXL poison: listed the poison of {} of {} memdevs; {} records known",
              r.listing.listed.size(), r.listing.all.size(), poison_.record_count());
    if (cxl_->fd() < 0) {
        // The pipe ended while listing: as in read_cxl_poison.
        log::warning("CXL poison: no more CXL events are read until SIGHUP "
                     "(systemctl reload tagmemfs)");
        cxl_.reset();
        r.changed |= poison_.set_incomplete("", "CXL poison: the trace pipe ended; no CXL "
                                                "events are read until SIGHUP");
    }
    return r.changed;
}

void Daemon::rescan_badblocks(const char* why) {
    const bool changed = health_.rescan(std::time(nullptr));
    log_badblock_failures();
    sync_badblocks();
    if (changed && tree_)
        publish_health(why);
}

void Daemon::note_release(const Uuid& tag, bool forced) {
    auto r = tree_ ? tree_->find(tag) : nullptr;
    if (!r) {
        log::debug("tag {}: a release was asked for; tagmemfs does not show it", tag.str());
        return;
    }
    if (!releases_.note(tag, std::time(nullptr)))
        return;
    log::warning("tag {}: the orchestrator asked for its capacity back{} ({}); {}", tag.str(),
                 forced ? " (forced)" : "", to_string(r->state),
                 r->state == TagState::offered
                     ? "the kernel releases it"
                     : "the kernel keeps it while a device holds it: `tagmem unclaim` gives it "
                       "back once unused");
    if (node_failed_.contains(tag))
        return; // shown with the mark when its node is made
    TagDelta delta;
    delta.upserts.push_back(r);
    publish(delta, "release requested");
}

void Daemon::publish_health(const char* why) {
    TagDelta delta;
    for (auto& r : tree_->records()) {
        // A record shown without its node keeps that: publish() would
        // retry the node, which is not what changed.
        if (node_failed_.contains(r->tag))
            continue;
        if (auto shown = with_health(r); shown != r)
            delta.upserts.push_back(std::move(shown));
    }
    for (const auto& r : delta.upserts)
        log::warning("tag {}: memory {} ({} bad ranges in its data) [{}]", r->tag.str(),
                     r->health ? "degraded" : "ok again", r->health ? r->health->bad.size() : 0,
                     why);
    publish(delta, why);
}

void Daemon::rescan(const char* why) {
    bool ok = false;
    Config fresh = load(&ok);
    if (ok)
        config_ = std::move(fresh);
    else
        log::error("{}: keeping the previous configuration", config_path());
    const auto t0 = std::chrono::steady_clock::now();
    // The bad ranges first: the records published below carry them.
    bool health_changed = health_.rescan(std::time(nullptr));
    log_badblock_failures();
    // Not at the retries of a failed scan (every 0.2 to 10 s): each listing
    // is a mailbox command per memdev, and the poison is not what failed.
    if (std::string_view(why) != "retry") {
        if (!cxl_)
            health_changed |= open_cxl_poison();
        health_changed |= list_cxl_poison();
    }
    auto delta = state_.rescan(config_);
    const auto t1 = std::chrono::steady_clock::now();
    const bool retrying = std::string_view(why) == "retry";
    if (!delta) {
        if (!retrying)
            log::error("rescan ({}) failed: {}; the namespace is unchanged", why,
                       delta.error().message);
        return;
    }
    if (!retrying) // said at the rescan that found them, not at each retry
        for (const auto& r : state_.snapshot().rejected)
            log::warning("{}: rejected: {}", r.device, r.reason);
    publish(*delta, why);
    sync_badblocks();
    if (health_changed)
        publish_health(why); // tags the scan found unchanged
    if (watchers_)
        watchers_->invalidate(); // rejected and untagged devices raise no tag event
    // A scan allocates and frees a lot (libdaxctl's own objects among it):
    // give the freed heap back rather than keep it as resident memory.
    malloc_trim(0);
    auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
    log::at(retrying ? log::Level::debug : log::Level::info,
            "rescan ({}): {} tags in {:.0f} ms (scan {:.0f} ms, publish {:.0f} ms)", why,
            state_.tag_count(), ms(std::chrono::steady_clock::now() - t0), ms(t1 - t0),
            ms(std::chrono::steady_clock::now() - t1));
}

void Daemon::on_uevents() {
    // Drain everything pending first: a burst becomes one update.
    auto events = uevents_->drain();
    for (const auto& ev : events)
        log::debug("uevent {} {} {}{}{}", ev.action, ev.subsystem, ev.sysname,
                   ev.driver.empty() ? "" : " driver=", ev.driver);
    if (uevents_->take_lost()) {
        // The socket overflowed: some device changed unseen.
        log::warning("device events were lost (the event socket overflowed); rescanning");
        rescan("lost uevents");
        return;
    }
    auto plan = plan_uevents(events, awaiting_bind_);
    if (plan.rescan) {
        // qemu_fw_cfg bound: the hand-off item is there to read now. The
        // full scan reads it and every device (this batch's among them),
        // enabling and tagging those it names.
        rescan("fw_cfg bound");
        return;
    }
    for (auto& name : state_.handed_over(plan.added))
        plan.devices.insert(name);
    for (const auto& parent : plan.parents)
        for (auto& name : state_.devices_under(parent))
            plan.devices.insert(std::move(name));
    if (!plan.devices.empty())
        publish(state_.refresh(plan.devices), "uevent");
    // A region came, went or changed: its bad ranges too.
    if (std::any_of(events.begin(), events.end(),
                    [](const auto& ev) { return ev.subsystem == "nd"; }))
        rescan_badblocks("uevent");
    if (watchers_)
        watchers_->invalidate(); // rejected and untagged devices raise no tag event
}

void Daemon::retry() {
    if (state_.needs_rescan()) {
        rescan("retry");
    } else if (state_.needs_retry()) {
        publish(state_.retry(), "retry");
    }
    TagDelta nodes;
    for (const auto& [tag, record] : node_failed_)
        nodes.upserts.push_back(record);
    publish(nodes, "retry");
}

void Daemon::note_health() {
    if (retry_wanted() && !failing_) {
        failing_ = true;
        log::warning("{}; keeping what was last read and retrying",
                     state_.needs_retry() ? state_.retry_reason()
                                          : std::string("device nodes cannot be made"));
    } else if (!retry_wanted() && failing_) {
        failing_ = false;
        log::info("reads of the host succeed again");
    }
}

void Daemon::event_loop() {
    // Told apart from libfuse's workers (which keep the process's name) in
    // `top -H`, gdb and /proc/PID/task/*/comm.
    pthread_setname_np(pthread_self(), "tagmem-events");
    using clock = std::chrono::steady_clock;
    using std::chrono::milliseconds;
    auto next_poll = clock::now() + milliseconds(opt_.extent_poll_ms);
    // Retries back off from a fifth of a second to ten seconds: quick after
    // a passing failure, cheap (a rescan at most) under a lasting one.
    constexpr milliseconds kFirstRetry{200}, kLastRetry{10000};
    milliseconds retry_delay = kFirstRetry;
    constexpr auto kNever = clock::time_point::max();
    auto next_retry = kNever;
    std::vector<pollfd> fds;
    bool stopping = false;
    for (;;) {
        note_health();
        if (!retry_wanted()) {
            next_retry = kNever;
            retry_delay = kFirstRetry;
        } else if (next_retry == kNever) {
            next_retry = clock::now() + retry_delay;
        }
        fds.clear();
        fds.push_back({stop_event_.get(), POLLIN, 0});
        fds.push_back({rescan_event_.get(), POLLIN, 0});
        fds.push_back({uevents_ ? uevents_->fd() : -1, POLLIN, 0});
        fds.push_back({stop_request_.get(), POLLIN, 0});
        const std::size_t cxl_fd = fds.size();
        fds.push_back({cxl_ ? cxl_->fd() : -1, POLLIN, 0});
        const std::size_t first_badblocks_fd = fds.size();
        badblocks_.poll_fds(fds);
        const std::size_t first_watch_fd = fds.size();
        if (watchers_)
            watchers_->poll_fds(fds);
        int timeout = -1;
        auto wait_until = [&](clock::time_point t) {
            auto left = std::chrono::duration_cast<milliseconds>(t - clock::now());
            int ms = static_cast<int>(std::max<long long>(0, left.count()));
            timeout = timeout < 0 ? ms : std::min(timeout, ms);
        };
        bool polling = opt_.extent_poll_ms > 0 && state_.has_dc_regions();
        if (polling)
            wait_until(next_poll);
        if (next_retry != kNever)
            wait_until(next_retry);
        if (int w = watchers_ ? watchers_->timeout_ms() : -1; w >= 0)
            timeout = timeout < 0 ? w : std::min(timeout, w);
        if (stopping) {
            // Until the main thread says the loop is over (fds[0]): a
            // signal wakes it from the semaphore it may be stuck on.
            pthread_kill(main_thread_, SIGTERM);
            timeout = timeout < 0 ? 20 : std::min(timeout, 20);
        }
        if (::poll(fds.data(), fds.size(), timeout) < 0) {
            if (errno == EINTR)
                continue;
            log::error("event loop: poll: {}", std::strerror(errno));
            return;
        }
        try {
            if (fds[0].revents)
                return;
            if (fds[1].revents) {
                drain_eventfd(rescan_event_.get());
                // systemd shows the unit as reloading until READY=1 (and, with
                // Type=notify-reload, times the reload from MONOTONIC_USEC).
                timespec now{};
                ::clock_gettime(CLOCK_MONOTONIC, &now);
                sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
                           static_cast<unsigned long long>(now.tv_sec) * 1000000ULL +
                               static_cast<unsigned long long>(now.tv_nsec) / 1000ULL);
                rescan("SIGHUP");
                retry_claims();
                sd_notify(0, "READY=1");
            }
            if (fds[2].revents)
                on_uevents();
            if (fds[3].revents) {
                drain_eventfd(stop_request_.get());
                stopping = true;
            }
            if (fds[cxl_fd].revents && read_cxl_poison())
                publish_health("cxl poison");
            if (auto notified = badblocks_.handle(std::vector<pollfd>(
                    fds.begin() + first_badblocks_fd, fds.begin() + first_watch_fd));
                !notified.empty()) {
                bool changed = false;
                for (auto& [region, text] : notified) {
                    log::debug("{}/badblocks: notified", region);
                    changed |= health_.update_region(region, text, std::time(nullptr));
                }
                log_badblock_failures();
                if (changed)
                    publish_health("badblocks");
                sync_badblocks(); // a region whose attribute went is no longer watched
            }
            if (watchers_) {
                watchers_->handle(std::vector<pollfd>(fds.begin() + first_watch_fd, fds.end()));
                watchers_->tick();
            }
            if (polling && clock::now() >= next_poll) {
                publish(state_.poll_extents(), "extent poll");
                next_poll = clock::now() + milliseconds(opt_.extent_poll_ms);
            }
            if (clock::now() >= next_retry) {
                next_retry = kNever;
                retry_delay = std::min(retry_delay * 2, kLastRetry);
                retry();
            }
        } catch (const std::exception& e) {
            log::error("event loop: {}", e.what());
        }
    }
}

// SIGTERM, SIGINT and SIGHUP wait (blocked) from the start until their
// handlers are in place: one that arrived between the mount and
// fuse_set_signal_handlers() used to kill the daemon and leave a dead mount.
sigset_t stop_signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    return set;
}

// The eventfds the handlers write and the event thread polls, then the
// handlers. Signals are blocked meanwhile (run()): a handler in place early
// runs only once they are unblocked, with the eventfds there.
Status Daemon::start_signals() {
    auto make = [](Fd& fd, int flags, const char* what) -> Status {
        fd = Fd(::eventfd(0, EFD_CLOEXEC | flags));
        if (!fd) {
            const int err = errno; // before fmt allocates
            return make_error(
                err, fmt::format("cannot make the {} eventfd: {}", what, std::strerror(err)));
        }
        return Ok{};
    };
    if (auto ok = make(rescan_event_, EFD_NONBLOCK, "rescan"); !ok)
        return ok;
    if (auto ok = make(stop_event_, 0, "stop"); !ok)
        return ok;
    if (auto ok = make(stop_request_, EFD_NONBLOCK, "stop request"); !ok)
        return ok;
    g_rescan_fd = rescan_event_.get();
    g_stop_fd = stop_request_.get();
    auto handle = [](int sig, void (*handler)(int), int flags) -> Status {
        struct sigaction sa {};
        sa.sa_handler = handler;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = flags;
        if (::sigaction(sig, &sa, nullptr) != 0) {
            const int err = errno;
            return make_error(
                err, fmt::format("cannot handle SIG{}: {}", sigabbrev_np(sig), std::strerror(err)));
        }
        return Ok{};
    };
    for (auto [sig, handler, flags] : {
             std::tuple{SIGHUP, &on_sighup, SA_RESTART},
             // No SA_RESTART: the main thread's wait in the session loop must end.
             std::tuple{SIGTERM, &on_stop, 0},
             std::tuple{SIGINT, &on_stop, 0},
             // As libfuse's handlers did: a closed peer is an error.
             std::tuple{SIGPIPE, SIG_IGN, 0},
         })
        if (auto ok = handle(sig, handler, flags); !ok)
            return ok;
    return Ok{};
}

bool stop_requested() {
    sigset_t pending;
    sigemptyset(&pending);
    return ::sigpending(&pending) == 0 &&
           (sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGINT) == 1);
}

int Daemon::run() {
    // Every thread made from here on inherits the blocked set; only the
    // main thread and the FUSE workers (made after the unblock) take them.
    const sigset_t block = stop_signals();
    sigset_t old;
    pthread_sigmask(SIG_BLOCK, &block, &old);
    bool ok = false;
    config_ = load(&ok);
    if (!ok) {
        log::error("{}: invalid configuration; not mounting", config_path());
        return 1;
    }
    auto options = mount_options(opt_.mount_options);
    if (!options) {
        log::error("{}", options.error().message);
        return 2;
    }
    // Before anything is mounted: a daemon that could not be told to rescan
    // or to stop must not start serving (its stop would hang at exit).
    if (auto started = start_signals(); !started) {
        log::error("{}; not mounting", started.error().message);
        return 1;
    }
    // Listen before the first scan, so that no event between the scan and
    // the start of the loop is lost (it waits in the socket).
    if (opt_.uevents != UeventSource::none) {
        auto mon = UeventMonitor::open(opt_.uevents);
        if (!mon)
            log::warning("{}; hotplug will need SIGHUP", mon.error().message);
        else
            uevents_.emplace(std::move(*mon));
    }
    auto lock = MountLock::acquire(opt_.mount_point);
    if (!lock) {
        log::error("{}", lock.error().message);
        return lock.error().code == EWOULDBLOCK ? kExitMountPointTaken : 1;
    }
    lock_.emplace(std::move(*lock));
    if (auto rec = recover_mount_point(opt_.mount_point, StaleMount::keep); !rec) {
        log::error("{}", rec.error().message);
        return 1;
    }
    if (auto abs = real_host_os().real_path(opt_.mount_point)) // mountinfo has absolute paths
        opt_.mount_point = *abs;
    auto nodes =
        NodeDir::mount(opt_.nodes_dir.empty() ? opt_.mount_point + ".nodes" : opt_.nodes_dir);
    if (!nodes) {
        log::error("{}", nodes.error().message);
        return 1;
    }
    nodes_.emplace(std::move(*nodes));
    tree_ = std::make_unique<TagTree>(nodes_->path());
    // A guest handed tags as CXL dynamic capacity (vm-args --cxl): the DC
    // regions the capacity arrives in, before the first scan looks for them.
    const DcRegionReport dc = make_handed_dc_regions(real_host_os());
    for (const auto& m : dc.made)
        log::info("{}: dynamic_ram_1 region {} of {} bytes for the VM hand-off", m.memdev,
                  m.region.empty() ? "(made before)" : m.region, m.size);
    for (const auto& f : dc.failures)
        log::warning("VM hand-off: cannot make a DC region: {}", f);
    rescan("start");

    if (stop_requested()) {
        log::info("stopped by a signal before mounting");
        return 0;
    }
    context_.tree = tree_.get();
    // A dead daemon's mount goes only now, with the tree ready: between the
    // detach and the mount the path is an empty directory.
    if (auto rec = recover_mount_point(opt_.mount_point, StaleMount::detach); !rec) {
        log::error("{}", rec.error().message);
        return 1;
    }
    auto mount = FuseMount::mount(opt_.mount_point, *options, &context_);
    if (!mount) {
        log::error("{}", mount.error().message);
        return 1;
    }
    se_ = mount->session();
    std::string socket_path =
        opt_.socket_path.empty() ? opt_.mount_point + ".sock" : opt_.socket_path;
    auto stats = [this] {
        const auto& c = context_.counters;
        return nlohmann::json{{"tags", tree_->tag_count()},
                              {"requests",
                               {{"lookup", c.lookup.load()},
                                {"getattr", c.getattr.load()},
                                {"readlink", c.readlink.load()},
                                {"opendir", c.opendir.load()},
                                {"readdir", c.readdir.load()},
                                {"open", c.open.load()},
                                {"read", c.read.load()},
                                {"statfs", c.statfs.load()},
                                {"refused", c.refused.load()}}}}
            .dump();
    };
    WatchSources sources{tree_.get(), opt_.mount_point, stats,
                         [this] { return state_.snapshot(); }};
    auto server = WatchServer::listen(socket_path, std::move(sources), opt_.watch);
    if (!server) {
        log::error("{}", server.error().message);
        return 1;
    }
    watchers_.emplace(std::move(*server));
    // Published only now that the mount serves: a container an engine starts
    // from the spec finds every tag directory it binds.
    if (!opt_.cdi_dir.empty()) {
        // Without it containers cannot request tags, but the host's own
        // programs can still use them: serve, and say so.
        if (auto cdi = CdiDir::open(opt_.cdi_dir, opt_.mount_point); !cdi)
            log::error("{}; no CDI spec will be written", cdi.error().message);
        else {
            cdi_.emplace(std::move(*cdi));
            // A crashed run's files of tags no longer usable would offer
            // them; those of usable tags are rewritten below.
            cdi_->remove_stale(
                [this](const Uuid& tag) { return cdi_devices_.devices().contains(tag); });
            std::vector<Uuid> all;
            all.reserve(cdi_devices_.devices().size());
            for (const auto& [tag, d] : cdi_devices_.devices())
                all.push_back(tag);
            write_cdi(all);
        }
    }
    log::info("mounted {} tags on {} ({}); events from {}, watch socket {}", tree_->tag_count(),
              opt_.mount_point, *options, uevents_ ? uevents_->source_name() : "nowhere",
              socket_path);

    // Mounted, listening, the CDI directory open: from here on the daemon
    // parses what every local user sends, and needs root's power only for
    // what fs/capabilities.hpp lists. Before daemonizing, so that a failure
    // is the exit status of whoever started it (unit, shell, mount.tagmem),
    // and before any thread is made, so that every thread has the sets.
    if (auto dropped = drop_capabilities(); !dropped) {
        log::error("cannot drop capabilities: {}; not serving", dropped.error().message);
        return 1; // still able to unmount: capset changes all sets or none
    }
    log::debug("capabilities kept: {}", capability_summary());

    if (!opt_.foreground) {
        if (fuse_daemonize(0) != 0) {
            log::error("cannot daemonize");
            return 1;
        }
        log::use_syslog();
        lock_->record_pid();
    }

    g_session = se_;
    main_thread_ = pthread_self();

    // Made while the signals are blocked, and they stay blocked in it: the
    // event thread must never be interrupted inside libdaxctl.
    std::optional<std::thread> events;
    try {
        events.emplace([this] { event_loop(); });
    } catch (const std::system_error& e) {
        log::error("cannot start the event thread: {}; not serving", e.what());
        return 1; // the mounts' destructors unmount
    }
    // Handlers in place (start_signals()): signals that waited are
    // delivered now.
    pthread_sigmask(SIG_SETMASK, &old, nullptr);

    // Type=notify: ready once the first scan is mounted and the watch socket
    // listens (a unit ordered after tagmemfs finds both), and only once
    // SIGHUP and SIGTERM are handled: systemd may send either at once. After
    // daemonizing, so the pid that says so is the one that stays. Without
    // $NOTIFY_SOCKET (not under systemd) this does nothing.
    sd_notifyf(0, "READY=1\nSTATUS=%zu tags on %s", tree_->tag_count(), opt_.mount_point.c_str());

    fuse_loop_config* cfg = fuse_loop_cfg_create();
    if (opt_.threads > 0)
        fuse_loop_cfg_set_max_threads(cfg, opt_.threads);
    int rc = fuse_session_loop_mt(se_, cfg);
    fuse_loop_cfg_destroy(cfg);

    // Blocked again, to the end: a second SIGTERM during the unmount must
    // not kill the daemon half-way (and leave a dead mount).
    pthread_sigmask(SIG_BLOCK, &block, nullptr);
    g_session = nullptr;
    sd_notify(0, "STOPPING=1");
    g_rescan_fd = -1;
    g_stop_fd = -1;
    std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(stop_event_.get(), &one, sizeof one);
    events->join();
    se_ = nullptr;
    cdi_.reset(); // no engine may start a container on a mount about to go
    watchers_.reset();
    cxl_.reset(); // the tracefs instance goes
    log::info("unmounting {}", opt_.mount_point);
    return rc == 0 ? 0 : 1;
}

} // namespace

int run_daemon(const DaemonOptions& options) {
    log::set_level(options.log_level);
    Daemon d(options);
    return d.run();
}

} // namespace tagmem
