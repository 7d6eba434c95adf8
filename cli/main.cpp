// SPDX-License-Identifier: Apache-2.0
// tagmem(1): list tagged memory, show one tag, resolve a tag to its device.
#include "exit_codes.hpp"
#include "format.hpp"
#include "watch_client.hpp"

#include "config.hpp"
#include "discovery.hpp"
#include "host_os.hpp"
#include "json_output.hpp"
#include "tagmem/version.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <optional>

namespace tagmem::cli {
namespace {

struct Options {
    std::optional<std::string> config_path;
    bool json = false;
    std::string tag_text;
};

// Scans the host with the configuration the options name. Config problems
// are part of the result, never fatal: the scan must still say what it can.
Result<ScanResult> scan(const Options& opt) {
    HostOs& os = real_host_os();
    Config config = opt.config_path ? load_config(*opt.config_path, false, os)
                                    : load_config(kDefaultConfigPath, true, os);
    return scan_host(config, os);
}

int fail(int code, const std::string& message) {
    fmt::print(stderr, "tagmem: {}\n", message);
    return code;
}

int cmd_list(const Options& opt) {
    auto result = scan(opt);
    if (!result)
        return fail(kExitError, result.error().message);
    if (opt.json)
        fmt::print("{}\n", scan_to_json(*result).dump(2));
    else
        fmt::print("{}", format_table(*result));
    return kExitOk;
}

// Shared by show and resolve: the record for the tag, or the exit code.
struct Lookup {
    std::optional<ScanResult> scan;
    const TagRecord* record = nullptr;
    int code = kExitOk;
};

Lookup lookup(const Options& opt) {
    Lookup l;
    auto tag = Uuid::parse(opt.tag_text);
    if (!tag) {
        l.code = fail(kExitUsage, tag.error().message);
        return l;
    }
    auto result = scan(opt);
    if (!result) {
        l.code = fail(kExitError, result.error().message);
        return l;
    }
    l.scan = std::move(*result);
    l.record = l.scan->find(*tag);
    if (!l.record)
        l.code = fail(kExitUnknownTag, fmt::format("no device carries tag {}", tag->str()));
    return l;
}

int cmd_show(const Options& opt) {
    auto l = lookup(opt);
    if (!l.record)
        return l.code;
    if (opt.json)
        fmt::print("{}\n", tag_to_json(*l.record).dump(2));
    else
        fmt::print("{}", format_tag(*l.record));
    return kExitOk;
}

int cmd_resolve(const Options& opt) {
    auto l = lookup(opt);
    if (!l.record)
        return l.code;
    const TagRecord& t = *l.record;
    switch (t.state) {
    case TagState::ready: fmt::print("{}\n", t.device()->dev.dev_path()); return kExitOk;
    case TagState::conflict: return fail(kExitConflict, t.reason);
    case TagState::system_ram:
    case TagState::disabled:
    case TagState::offered:
    case TagState::no_node: return fail(kExitNotUsable, t.reason);
    }
    return kExitError;
}

} // namespace

int run(int argc, char** argv) {
    CLI::App app{"tagmem: find tagged special-purpose memory (CXL DCD, pmem, soft-reserved) "
                 "and resolve tags to dax devices"};
    app.require_subcommand(1);
    app.set_version_flag("--version", std::string("tagmem ") + kVersion);
    Options opt;
    app.add_option("-c,--config", opt.config_path,
                   fmt::format("configuration file (default {}, optional)", kDefaultConfigPath));

    auto* list = app.add_subcommand("list", "list every tag on this host");
    list->add_flag("-j,--json", opt.json, "JSON output with stable keys");

    auto* show = app.add_subcommand("show", "everything known about one tag");
    show->add_option("tag", opt.tag_text, "the tag (UUID)")->required();
    show->add_flag("-j,--json", opt.json, "JSON output (the schema of tagmemfs metadata)");

    auto* resolve = app.add_subcommand(
        "resolve", "print the device path of a tag; exit 3 unknown, 4 conflict, 5 not usable");
    resolve->add_option("tag", opt.tag_text, "the tag (UUID)")->required();

    WatchOptions wopt;
    auto* wait = app.add_subcommand(
        "wait", "wait until a tag is usable at <mount>/<tag>/data; exit 6 on timeout");
    wait->add_option("tag", wopt.tag_text, "the tag (UUID)")->required();
    wait->add_option("-t,--timeout", wopt.timeout_s, "give up after this many seconds");
    auto* watch = app.add_subcommand("watch", "print one line per change until interrupted");
    watch->add_flag("-j,--json", wopt.json, "the socket's JSON lines as they come");
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
    if (*wait)
        return cmd_wait(wopt);
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
