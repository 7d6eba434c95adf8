// SPDX-License-Identifier: Apache-2.0
#include "vm_attach.hpp"

#include "exit_codes.hpp"
#include "qmp_client.hpp"
#include "vm_follow.hpp"

#include "uuid.hpp"
#include "vm_cxl.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <thread>

namespace tagmem::cli {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

int fail(int code, const std::string& message) {
    fmt::print(stderr, "tagmem: {}\n", message);
    return code;
}

double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// The guest's device for the tag and the size of its DC region (the
// backend's), or the exit code and message of why there is none.
struct Declared {
    std::string device_id;
    std::uint64_t size = 0;
};

Result<Declared> find_declared(const VmAttachOptions& opt, const Uuid& tag, int& code) {
    Declared d;
    d.device_id = opt.id ? *opt.id : vm::cxl_device_id(tag.str());
    const std::string path = vm::cxl_device_path(d.device_id);
    auto qom = [&](const std::string& p, const char* prop) {
        return qmp_execute(opt.qmp, vm::qmp_qom_get(p, prop));
    };
    auto type = qom(path, "type");
    if (!type) {
        code = type.error().code == kQmpErrorReply ? kExitNotDeclared : kExitNoQmp;
        if (code == kExitNotDeclared)
            return make_error(
                ENODEV,
                fmt::format("the guest has no device {} for tag {} ({}): vm-attach adds capacity "
                            "only to a CXL device the guest was given at boot; start the guest "
                            "with the arguments of tagmem vm-args --cxl ... {} (hot-adding the "
                            "device itself is not done, docs/vm.md)",
                            d.device_id, tag.str(), type.error().message, tag.str()));
        return type.error();
    }
    if (!type->is_string() || type->get<std::string>() != "cxl-type3") {
        code = kExitNotDeclared;
        return make_error(ENODEV, fmt::format("the guest's device {} is a {}, not a cxl-type3",
                                              d.device_id, type->dump()));
    }
    auto backend = qom(path, "volatile-dc-memdev");
    auto size = backend && backend->is_string() && !backend->get<std::string>().empty()
                    ? qom(backend->get<std::string>(), "size")
                    : Result<json>(make_error(ENODEV, "no volatile-dc-memdev"));
    if (!size || !size->is_number_unsigned() || size->get<std::uint64_t>() == 0) {
        code = !size && size.error().code != kQmpErrorReply && size.error().code != ENODEV
                   ? kExitNoQmp
                   : kExitNotDeclared;
        return make_error(ENODEV,
                          fmt::format("the guest's device {} has no dynamic capacity backend{}",
                                      d.device_id, size ? "" : ": " + size.error().message));
    }
    d.size = size->get<std::uint64_t>();
    return d;
}

} // namespace

int cmd_vm_attach(const QueryOptions& query, const VmAttachOptions& opt) {
    auto tag = Uuid::parse(opt.tag);
    if (!tag)
        return fail(kExitUsage, tag.error().message);
    auto found = query_tag(query, *tag);
    if (!found)
        return fail(kExitError, found.error().message);
    if (!*found)
        return fail(kExitUnknownTag, fmt::format("no device carries tag {}", tag->str()));
    auto checked = vm::check_tag(json::array({**found}), *tag);
    if (checked.refused)
        return fail(checked.refused->why == vm::Refusal::conflict ? kExitConflict : kExitNotUsable,
                    checked.refused->message);
    const std::uint64_t size = (**found).value("size", std::uint64_t{0});

    int code = kExitError;
    auto declared = find_declared(opt, *tag, code);
    if (!declared)
        return fail(code, declared.error().message);
    // The device's DC region is the tag's data as QEMU mapped it at boot: a
    // region of another size is another memory (or the tag changed since).
    if (declared->size != size)
        return fail(kExitNotDeclared,
                    fmt::format("the guest's device {} has a {}-byte dynamic capacity region, but "
                                "tag {} has {} bytes: it was declared for other memory",
                                declared->device_id, declared->size, tag->str(), size));
    const auto t0 = Clock::now();
    auto added = qmp_execute(opt.qmp, vm::qmp_add_capacity(declared->device_id, tag->str(), size));
    if (!added)
        return fail(kExitNoQmp, added.error().message);
    fmt::print("tag {}: {} bytes of capacity offered to the guest on {} (QMP {:.1f} ms)\n",
               tag->str(), size, declared->device_id, ms_since(t0));
    std::fflush(stdout);
    if (opt.follow)
        return follow_attached(query, FollowTarget{opt.qmp, declared->device_id, *tag, size});
    return kExitOk;
}

int cmd_vm_detach(const VmAttachOptions& opt) {
    auto tag = Uuid::parse(opt.tag);
    if (!tag)
        return fail(kExitUsage, tag.error().message);
    // The host's tag is not asked: a tag that vanished on the host must
    // still be taken back from the guest. The device says the size.
    int code = kExitError;
    auto declared = find_declared(opt, *tag, code);
    if (!declared)
        return fail(code, declared.error().message);
    const json release = vm::qmp_release_capacity(declared->device_id, tag->str(), declared->size);
    // QEMU answers a release at once: it only queues the request for the
    // guest. It refuses one for capacity the guest does not hold ("non-
    // existing DPA range") or has not accepted yet ("pending"); that is how
    // the outcome is learnt, by asking again after a while.
    auto ask = [&] { return qmp_execute(opt.qmp, release); };
    auto not_held = [](const Error& e) {
        return e.code == kQmpErrorReply && e.message.find("non-existing") != std::string::npos;
    };
    auto pending = [](const Error& e) {
        return e.code == kQmpErrorReply && e.message.find("pending") != std::string::npos;
    };
    const auto t0 = Clock::now();
    auto first = ask();
    if (!first) {
        if (not_held(first.error()))
            return fail(kExitNotAttached, fmt::format("the guest holds no capacity of tag {} on {}",
                                                      tag->str(), declared->device_id));
        if (pending(first.error()))
            return fail(kExitDetachRefused,
                        fmt::format("deferred: the guest has not accepted tag {}'s capacity yet; "
                                    "try again ({})",
                                    tag->str(), first.error().message));
        return fail(kExitNoQmp, first.error().message);
    }
    // Asking again is what the kernel expects of a device whose release it
    // refused: each probe that finds the capacity still held is a new
    // request, so they are spaced out (0.25 s, doubling).
    auto step = std::chrono::milliseconds(250);
    const auto deadline =
        t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(opt.wait_s));
    int asked = 1;
    for (;;) {
        auto now = Clock::now();
        if (now >= deadline)
            break;
        std::this_thread::sleep_for(
            std::min<Clock::duration>(Clock::duration(step), deadline - now));
        step *= 2;
        auto again = ask();
        ++asked;
        if (!again && not_held(again.error())) {
            fmt::print("tag {}: released by the guest from {} in {:.0f} ms\n", tag->str(),
                       declared->device_id, ms_since(t0));
            return kExitOk;
        }
        if (!again && !pending(again.error()))
            return fail(kExitNoQmp, again.error().message);
    }
    return fail(kExitDetachRefused,
                fmt::format("refused (deferred by the guest kernel): the guest still holds tag "
                            "{}'s capacity after {:.1f} s and {} requests; a guest dax device "
                            "holds it (its tagmem shows release_requested). After the guest's "
                            "users let go and root runs tagmem unclaim {} there, run vm-detach "
                            "again",
                            tag->str(), opt.wait_s, asked, tag->str()));
}

} // namespace tagmem::cli
