// SPDX-License-Identifier: Apache-2.0
// tagmem(1): list tagged memory, show one tag, resolve a tag to its device,
// and (root, opted in) make a tag's memory system RAM and back.
#include "claim_command.hpp"
#include "exit_codes.hpp"
#include "format.hpp"
#include "memory_change.hpp"
#include "query.hpp"
#include "vm_args.hpp"
#include "vm_attach.hpp"
#include "watch_client.hpp"

#include "cdi.hpp"
#include "config.hpp"
#include "tagmem/version.hpp"
#include "uuid.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <unistd.h>

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

namespace tagmem::cli {
namespace {

struct Options {
    QueryOptions query;
    bool json = false;
    std::string tag_text;
};

int fail(int code, const std::string& message) {
    fmt::print(stderr, "tagmem: {}\n", message);
    return code;
}

int cmd_list(const Options& opt) {
    auto result = query_list(opt.query);
    if (!result)
        return fail(kExitError, result.error().message);
    if (opt.json)
        fmt::print("{}\n", result->dump(2));
    else
        fmt::print("{}", format_table(*result));
    return kExitOk;
}

// Shared by show and resolve: the tag's JSON, or the exit code.
struct Lookup {
    std::optional<nlohmann::json> tag;
    int code = kExitOk;
};

Lookup lookup(const Options& opt) {
    Lookup l;
    auto tag = Uuid::parse(opt.tag_text);
    if (!tag) {
        l.code = fail(kExitUsage, tag.error().message);
        return l;
    }
    auto result = query_tag(opt.query, *tag);
    if (!result) {
        l.code = fail(kExitError, result.error().message);
        return l;
    }
    l.tag = std::move(*result);
    if (!l.tag)
        l.code = fail(kExitUnknownTag, fmt::format("no device carries tag {}", tag->str()));
    return l;
}

int cmd_show(const Options& opt) {
    auto l = lookup(opt);
    if (!l.tag)
        return l.code;
    if (opt.json)
        fmt::print("{}\n", l.tag->dump(2));
    else
        fmt::print("{}", format_tag(*l.tag));
    return kExitOk;
}

int cmd_resolve(const Options& opt) {
    auto l = lookup(opt);
    if (!l.tag)
        return l.code;
    const auto& t = *l.tag;
    const std::string state = t.value("state", "");
    const std::string reason = t.value("reason", "");
    if (state == "ready" && t.contains("path") && t["path"].is_string()) {
        fmt::print("{}\n", t["path"].get<std::string>());
        return kExitOk;
    }
    if (state == "conflict")
        return fail(kExitConflict, reason);
    return fail(kExitNotUsable, reason.empty() ? fmt::format("state {}", state) : reason);
}

// The spec tagmemfs keeps in /var/run/cdi, for /etc/cdi or a host without
// the daemon: the same tags, the same paths (those of a tagmemfs mounted as
// given). With tags named, only those: engines parse every spec at every
// container start, so a host with thousands of tags is better served by a
// spec of the few its containers use (docs/containers.md).
int cmd_cdi(const Options& opt, const CdiPaths& paths, const std::vector<std::string>& only) {
    auto result = scan_locally(opt.query);
    if (!result)
        return fail(kExitError, result.error().message);
    CdiDevices devices;
    for (const auto& text : only) {
        auto tag = Uuid::parse(text);
        if (!tag)
            return fail(kExitUsage, tag.error().message);
        const TagRecord* t = result->find(*tag);
        if (!t)
            return fail(kExitUnknownTag, fmt::format("no device carries tag {}", tag->str()));
        auto d = cdi_device_of(*t);
        if (!d)
            return fail(t->state == TagState::conflict ? kExitConflict : kExitNotUsable,
                        fmt::format("tag {} is not usable: {}", tag->str(), t->reason));
        devices.emplace(t->tag, std::move(*d));
    }
    if (only.empty())
        for (const auto& t : result->tags)
            if (auto d = cdi_device_of(t))
                devices.emplace(t.tag, std::move(*d));
    auto spec = cdi_spec(devices, paths);
    if (!spec)
        return fail(kExitNotUsable, "no usable tag, and CDI refuses a spec without devices");
    fmt::print("{}\n", nlohmann::json::parse(*spec).dump(2)); // for people editing /etc/cdi
    return kExitOk;
}

} // namespace

int run(int argc, char** argv) {
    CLI::App app{"tagmem: find tagged special-purpose memory (CXL DCD, pmem, soft-reserved) "
                 "and resolve tags to dax devices"};
    app.require_subcommand(1);
    app.set_version_flag("--version", std::string("tagmem ") + kVersion);
    Options opt;
    app.add_option("-c,--config", opt.query.config_path,
                   fmt::format("configuration file (default {}, optional); list, show, "
                               "resolve and vm-args then scan the host; online and offline "
                               "need it valid",
                               kDefaultConfigPath));

    auto* list = app.add_subcommand("list", "list every tag on this host");
    list->add_flag("-j,--json", opt.json, "JSON output with stable keys");

    auto* show = app.add_subcommand("show", "everything known about one tag");
    show->add_option("tag", opt.tag_text, "the tag (UUID)")->required();
    show->add_flag("-j,--json", opt.json, "JSON output (the schema of tagmemfs metadata)");

    auto* resolve = app.add_subcommand(
        "resolve", "print the device path of a tag; exit 3 unknown, 4 conflict, 5 not usable");
    resolve->add_option("tag", opt.tag_text, "the tag (UUID)")->required();
    VmArgsOptions vopt;
    auto* vm_args = app.add_subcommand(
        "vm-args", "QEMU arguments (or libvirt XML) that hand tags to a guest; exit 3 unknown, "
                   "4 conflict, 5 not usable, 7 no layout, 8 hotplug");
    vm_args->add_option("tag", vopt.tags, "the tags (UUIDs), in guest NUMA node order")->required();
    vm_args
        ->add_option("--memory", vopt.memory,
                     "guest RAM, node 0 (a number of MiB, or with K, M, G, T)")
        ->capture_default_str();
    vm_args->add_option("--cpus", vopt.cpus, "guest CPUs, all on node 0")
        ->capture_default_str()
        ->check(CLI::Range(1u, 4096u));
    vm_args
        ->add_option("--machine", vopt.machine,
                     "QEMU machine type: pc, q35 or a versioned pc-i440fx-*, pc-q35-*")
        ->capture_default_str();
    auto* vm_format =
        vm_args
            ->add_option("--format", vopt.format,
                         "shell (one shell-quoted line), lines (one argument per line), json")
            ->capture_default_str()
            ->check(CLI::IsMember({"shell", "lines", "json"}));
    auto* vm_libvirt =
        vm_args->add_flag("--libvirt", vopt.libvirt, "a libvirt domain XML fragment instead");
    auto* vm_cmdline = vm_args->add_flag("--kernel-cmdline", vopt.kernel_cmdline,
                                         "only the guest kernel's memmap= parameters");
    // Three different outputs: asking for two is a mistake to report, not
    // one to guess at.
    vm_format->excludes(vm_libvirt)->excludes(vm_cmdline);
    vm_libvirt->excludes(vm_cmdline);
    vm_args->add_option("--user", vopt.user,
                        "warn unless this user (QEMU's) may open the tags' data (default: the "
                        "caller)");
    vm_args->add_flag("--hotplug", vopt.hotplug,
                      "into a running guest: refused (exit 8), the mechanism cannot; see --cxl");
    vm_args->add_flag("--cxl", vopt.cxl,
                      "a CXL dynamic-capacity device per tag, no capacity at boot: the tags "
                      "arrive and leave while the guest runs (vm-attach, vm-detach)");
    vm_args->add_option("--cdat-dir", vopt.cdat_dir,
                        "--cxl: write each tag's CDAT (the host's latency and bandwidth) to "
                        "<dir>/<tag>.cdat and give it to its device");

    VmAttachOptions aopt;
    auto* vm_attach = app.add_subcommand(
        "vm-attach", "add a tag's capacity to a running guest's CXL device (vm-args --cxl) over "
                     "QMP; exit 3 unknown, 4 conflict, 5 not usable, 17 QMP, 18 not declared");
    auto* vm_detach = app.add_subcommand(
        "vm-detach", "release a tag's capacity from a running guest over QMP; exit 17 QMP, "
                     "18 not declared, 19 refused by the guest, 20 not attached");
    for (auto* sub : {vm_attach, vm_detach}) {
        sub->add_option("tag", aopt.tag, "the tag (UUID)")->required();
        sub->add_option("--qmp", aopt.qmp, "the guest's QMP socket (unix)")->required();
        sub->add_option("--id", aopt.id, "the cxl-type3 device id (default tagmem-<tag>)");
    }
    vm_attach->add_flag("--follow", aopt.follow,
                        "then follow the host tagmemfs: forward the tag's memory errors to the "
                        "guest as poison, and ask the tag back when it leaves the host");
    vm_detach
        ->add_option("--wait", aopt.wait_s,
                     "seconds the guest has to give the capacity back before it counts as refused")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 3600.0));

    // Answers come from tagmemfs when it runs (what /run/tagmem shows),
    // else from a scan of the host.
    for (auto* sub : {list, show, resolve, vm_args, vm_attach}) {
        sub->add_flag("--scan", opt.query.scan, "scan the host even if tagmemfs runs");
        sub->add_option("-m,--mount-point", opt.query.mount_point, "where tagmemfs is mounted")
            ->capture_default_str();
        sub->add_option("-s,--socket", opt.query.socket_path,
                        "tagmemfs's socket (default: <mount point>.sock)");
    }

    CdiPaths cdi_paths;
    auto* cdi = app.add_subcommand(
        "cdi", fmt::format("print the CDI spec of the usable tags ({}); exit 5 if none", kCdiKind));
    std::vector<std::string> cdi_tags;
    cdi->add_option("tag", cdi_tags, "only these tags (UUIDs); exit 3 unknown, 4, 5 not usable");
    cdi->add_option("-m,--mount-point", cdi_paths.mount_point, "where tagmemfs is mounted")
        ->capture_default_str();
    cdi->add_option("--nodes-dir", cdi_paths.nodes_dir,
                    "tagmemfs's --nodes-dir (default: <mount point>.nodes)");

    // tagmem online / offline: root, and only for tags tagmem.conf opts in.
    std::string change_tag;
    auto* online = app.add_subcommand(
        "online", "make a tag's device system RAM (root; only if tagmem.conf says "
                  "online = allow); refusals exit 3-5 or 10-15");
    auto* offline = app.add_subcommand(
        "offline", "return a tag's system RAM to devdax (root; the same opt-in); exit 13 when "
                   "the kernel cannot offline it");
    for (auto* sub : {online, offline})
        sub->add_option("tag", change_tag, "the tag (UUID)")->required();

    // tagmem claim: root; offered DCD capacity becomes the tag's devdax.
    std::string claim_tag;
    auto* claim = app.add_subcommand(
        "claim", "make a tag's offered CXL Dynamic Capacity its devdax device (root); exit 0 "
                 "also if claimed already; refusals exit 3-5, 10, 13, 14, 16");
    claim->add_option("tag", claim_tag, "the tag (UUID)")->required();
    auto* unclaim = app.add_subcommand(
        "unclaim", "give a claimed tag's CXL Dynamic Capacity back to its region, so that the "
                   "orchestrator's release goes through (root); refused while in use (exit 12); "
                   "refusals exit 3-5, 10, 13, 15");
    unclaim->add_option("tag", claim_tag, "the tag (UUID)")->required();

    WatchOptions wopt;
    auto* wait = app.add_subcommand(
        "wait", "wait until a tag is usable at <mount>/<tag>/data; exit 6 on timeout");
    wait->add_option("tag", wopt.tag_text, "the tag (UUID)")->required();
    wait->add_option("-t,--timeout", wopt.timeout_s, "give up after this many seconds");
    wait->add_flag("--degraded", wopt.degraded,
                   "instead: until the tag's memory has errors (at once if it has); "
                   "prints its health as JSON");
    wait->add_flag("--health-change", wopt.health_change,
                   "instead: until the tag's health next changes; prints it as JSON");
    wait->add_flag("--release-requested", wopt.release_requested,
                   "instead: until the orchestrator asks for the tag's CXL capacity back (at "
                   "once if it has) or the tag is gone; prints the event as JSON");
    auto* watch = app.add_subcommand("watch", "print one line per change until interrupted");
    watch->add_flag("-j,--json", wopt.json, "the socket's JSON lines as they come");
    watch->add_flag("--snapshot", wopt.snapshot,
                    "first the tags that exist (event \"exists\"), then the changes");
    for (auto* sub : {wait, watch}) {
        sub->add_option("-m,--mount-point", wopt.mount_point, "where tagmemfs is mounted")
            ->capture_default_str();
        sub->add_option("-s,--socket", wopt.socket_path,
                        "tagmemfs's watch socket (default: <mount point>.sock)");
    }

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        app.exit(e);
        return kExitUsage;
    }
    if (*list)
        return cmd_list(opt);
    if (*show)
        return cmd_show(opt);
    if (*resolve)
        return cmd_resolve(opt);
    if (*cdi)
        return cmd_cdi(opt, cdi_paths, cdi_tags);
    if (*online)
        return cmd_memory_change(MemoryChange::online, change_tag, opt.query);
    if (*offline)
        return cmd_memory_change(MemoryChange::offline, change_tag, opt.query);
    if (*claim)
        return cmd_claim(claim_tag, opt.query);
    if (*unclaim)
        return cmd_unclaim(claim_tag, opt.query);
    if (*vm_args)
        return cmd_vm_args(opt.query, vopt);
    if (*vm_attach)
        return cmd_vm_attach(opt.query, aopt);
    if (*vm_detach)
        return cmd_vm_detach(aopt);
    if (*wait)
        return wopt.release_requested                ? cmd_wait_release(wopt)
               : wopt.degraded || wopt.health_change ? cmd_wait_health(wopt)
                                                     : cmd_wait(wopt);
    if (*watch)
        return cmd_watch(wopt);
    return kExitUsage;
}

} // namespace tagmem::cli

int main(int argc, char** argv) {
    try {
        return tagmem::cli::run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tagmem: internal error: %s\n", e.what());
        return tagmem::cli::kExitError;
    }
}
