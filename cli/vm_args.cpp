// SPDX-License-Identifier: Apache-2.0
#include "vm_args.hpp"

#include "exit_codes.hpp"

#include "uuid.hpp"
#include "vm_cxl.hpp"
#include "vm_handoff.hpp"

#include <fmt/format.h>

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

namespace tagmem::cli {
namespace {

int fail(int code, const std::string& message) {
    fmt::print(stderr, "tagmem: {}\n", message);
    return code;
}

int exit_code(vm::Refusal why) {
    switch (why) {
    case vm::Refusal::unknown_tag: return kExitUnknownTag;
    case vm::Refusal::conflict: return kExitConflict;
    case vm::Refusal::not_usable: return kExitNotUsable;
    case vm::Refusal::layout: return kExitNoLayout;
    case vm::Refusal::usage: return kExitUsage;
    }
    return kExitError;
}

// The user whose access counts: the one named (QEMU's user, such as
// libvirt-qemu), else the caller.
struct Who {
    std::string name;
    uid_t uid = 0;
    std::vector<gid_t> groups;
};

std::optional<Who> who(const std::optional<std::string>& user) {
    Who w;
    if (!user) {
        w.uid = ::geteuid();
        w.name = fmt::format("uid {}", w.uid);
        w.groups.push_back(::getegid());
        int n = ::getgroups(0, nullptr);
        if (n > 0) {
            std::vector<gid_t> more(static_cast<std::size_t>(n));
            n = ::getgroups(n, more.data());
            if (n > 0)
                w.groups.insert(w.groups.end(), more.begin(), more.begin() + n);
        }
        return w;
    }
    const passwd* pw = ::getpwnam(user->c_str());
    if (!pw)
        return std::nullopt;
    w.name = *user;
    w.uid = pw->pw_uid;
    int n = 64;
    w.groups.resize(static_cast<std::size_t>(n));
    while (::getgrouplist(pw->pw_name, pw->pw_gid, w.groups.data(), &n) < 0)
        w.groups.resize(static_cast<std::size_t>(n));
    w.groups.resize(static_cast<std::size_t>(n));
    return w;
}

void print_args(const std::vector<std::string>& args, const std::string& format) {
    if (format == "lines") {
        for (const auto& a : args)
            fmt::print("{}\n", a);
        return;
    }
    std::string line;
    for (const auto& a : args)
        line += (line.empty() ? "" : " ") + vm::shell_quote(a);
    fmt::print("{}\n", line);
}

void warn_access(const Who& user, const nlohmann::json& access, const std::string& mem_path) {
    auto may = vm::may_open_rw(access, user.uid, user.groups);
    if (may && !*may)
        fmt::print(stderr,
                   "tagmem: warning: {} may not open {} read-write (access {}:{} {}); QEMU "
                   "running as that user will fail to start: see access in tagmem.conf(5)\n",
                   user.name, mem_path, access.value("owner", "?"), access.value("group", "?"),
                   access.value("mode", "?"));
}

// --cxl: a CXL type 3 device per tag with an empty DC region backed by the
// tag's data; the capacity comes later with vm-attach.
int cxl_args(const nlohmann::json& listed, const std::vector<Uuid>& wanted, std::uint64_t ram,
             const QueryOptions& query, const VmArgsOptions& opt, const Who& user) {
    if (opt.libvirt || opt.kernel_cmdline)
        return fail(kExitUsage, "--cxl has no libvirt fragment and needs no guest kernel "
                                "parameters: use --format shell, lines or json");
    vm::CxlGuestSpec guest;
    guest.ram_size = ram;
    guest.mount_point = query.mount_point;
    guest.cdat_dir = opt.cdat_dir;
    auto result = vm::plan_cxl(listed.value("tags", nlohmann::json::array()), wanted, guest);
    if (!result.plan) {
        for (const auto& r : result.refused)
            fmt::print(stderr, "tagmem: {}\n", r.message);
        return exit_code(result.refused.front().why);
    }
    for (const auto& w : result.plan->warnings)
        fmt::print(stderr, "tagmem: warning: {}\n", w);
    for (const auto& t : result.plan->tags)
        warn_access(user, t.access, t.mem_path);
    // QEMU reads a device's CDAT file when it starts: written before the
    // arguments naming it are printed.
    for (const auto& t : result.plan->tags) {
        if (t.cdat_path.empty())
            continue;
        const auto table = vm::cdat_table(t);
        std::ofstream out(t.cdat_path, std::ios::binary | std::ios::trunc);
        out.write(table->data(), static_cast<std::streamsize>(table->size()));
        out.close();
        if (!out)
            return fail(kExitError, fmt::format("--cdat-dir: cannot write {}", t.cdat_path));
    }
    if (opt.format == "json") {
        fmt::print("{}\n", vm::cxl_plan_json(*result.plan)
                               .dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
        return kExitOk;
    }
    print_args(vm::cxl_qemu_args(*result.plan), opt.format);
    return kExitOk;
}

} // namespace

int cmd_vm_args(const QueryOptions& query, const VmArgsOptions& opt) {
    if (opt.hotplug)
        return fail(kExitUnsupported,
                    "hotplug into a running guest is not possible with this hand-off: the guest "
                    "kernel makes a tag's range soft-reserved from memmap= at boot, and memory "
                    "hot-added later (QMP object-add + device_add pc-dimm) comes online as "
                    "ordinary RAM, not as the tag's dax device; start the guest with the tag "
                    "instead, or give it CXL devices (--cxl) and attach the tags later with "
                    "tagmem vm-attach (docs/vm.md, Hotplug)");
    std::vector<Uuid> wanted;
    for (const auto& text : opt.tags) {
        auto tag = Uuid::parse(text);
        if (!tag)
            return fail(kExitUsage, tag.error().message);
        wanted.push_back(*tag);
    }
    vm::GuestSpec guest;
    auto ram = vm::parse_size(opt.memory);
    if (!ram)
        return fail(kExitUsage, "--memory: " + ram.error().message);
    guest.ram_size = *ram;
    guest.cpus = opt.cpus;
    guest.machine = opt.machine;
    guest.mount_point = query.mount_point;
    std::optional<Who> user = who(opt.user);
    if (!user)
        return fail(kExitUsage, fmt::format("--user: no user {}", *opt.user));

    // One answer for all tags: the daemon's list, else one scan.
    auto listed = query_list(query);
    if (!listed)
        return fail(kExitError, listed.error().message);
    if (opt.cxl)
        return cxl_args(*listed, wanted, guest.ram_size, query, opt, *user);
    auto result = vm::plan_handoff(listed->value("tags", nlohmann::json::array()), wanted, guest);
    if (!result.plan) {
        for (const auto& r : result.refused)
            fmt::print(stderr, "tagmem: {}\n", r.message);
        return exit_code(result.refused.front().why);
    }
    const vm::Plan& plan = *result.plan;
    for (const auto& w : plan.warnings)
        fmt::print(stderr, "tagmem: warning: {}\n", w);
    for (const auto& t : plan.tags)
        warn_access(*user, t.access, t.mem_path);

    if (opt.kernel_cmdline) {
        fmt::print("{}\n", vm::kernel_params(plan));
        return kExitOk;
    }
    if (opt.libvirt) {
        fmt::print("{}", vm::libvirt_xml(plan));
        return kExitOk;
    }
    if (opt.format == "json") {
        fmt::print("{}\n", vm::plan_json(plan).dump(2, ' ', false,
                                                    nlohmann::json::error_handler_t::replace));
        return kExitOk;
    }
    print_args(vm::qemu_args(plan), opt.format);
    fmt::print(stderr, "tagmem: the guest kernel's command line needs: {}\n",
               vm::kernel_params(plan));
    return kExitOk;
}

} // namespace tagmem::cli
