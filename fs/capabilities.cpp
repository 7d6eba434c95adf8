// SPDX-License-Identifier: Apache-2.0
// Raw capget/capset and prctl rather than libcap: three system calls on
// two 32-bit words do not need a library and a build dependency more.
#include "capabilities.hpp"

#include <fmt/format.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

namespace tagmem {

const std::array<KeptCapability, 4> kKeptCapabilities{{
    {CAP_CHOWN, "CAP_CHOWN"},
    {CAP_FOWNER, "CAP_FOWNER"},
    {CAP_SYS_ADMIN, "CAP_SYS_ADMIN"},
    {CAP_MKNOD, "CAP_MKNOD"},
}};

namespace {

bool kept(int cap) {
    for (const auto& k : kKeptCapabilities)
        if (k.number == cap)
            return true;
    return false;
}

struct CapSets {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3]{};
};

Result<CapSets> get_caps() {
    CapSets s;
    if (::syscall(SYS_capget, &s.header, s.data) != 0)
        return sys_error("capget");
    return s;
}

} // namespace

Status drop_capabilities() {
    // No execve may give back what is dropped here (it never executes
    // anything: libfuse unmounts with umount2 when it runs as root).
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return sys_error("cannot set no_new_privs");
    // EINVAL: a kernel before 4.3, which has no ambient set.
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
        return sys_error("cannot clear the ambient capabilities");
    // The bounding set first, while CAP_SETPCAP may still be there. The
    // kernel's last capability is where PR_CAPBSET_READ says EINVAL.
    for (int cap = 0;; ++cap) {
        const int in = ::prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
        if (in < 0)
            break;
        if (in == 1 && !kept(cap) && ::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
            const int err = errno; // before fmt allocates
            return make_error(err, fmt::format("cannot drop capability {} from the bounding "
                                               "set: {}",
                                               cap, std::strerror(err)));
        }
    }
    auto s = get_caps();
    if (!s)
        return s.error();
    std::uint32_t mask[_LINUX_CAPABILITY_U32S_3]{};
    for (const auto& k : kKeptCapabilities)
        mask[CAP_TO_INDEX(k.number)] |= CAP_TO_MASK(k.number);
    for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; ++i) {
        s->data[i].effective &= mask[i];
        s->data[i].permitted &= mask[i];
        s->data[i].inheritable = 0;
    }
    if (::syscall(SYS_capset, &s->header, s->data) != 0)
        return sys_error("capset");
    return Ok{};
}

std::string capability_summary() {
    auto s = get_caps();
    if (!s)
        return s.error().message;
    auto word = [](std::uint32_t hi, std::uint32_t lo) {
        return fmt::format("{:016x}", (std::uint64_t{hi} << 32) | lo);
    };
    std::uint64_t bounding = 0;
    for (int cap = 0; cap < 64; ++cap) {
        const int in = ::prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
        if (in < 0)
            break;
        if (in == 1)
            bounding |= std::uint64_t{1} << cap;
    }
    return fmt::format("CapEff {} CapPrm {} CapInh {} CapBnd {:016x}",
                       word(s->data[1].effective, s->data[0].effective),
                       word(s->data[1].permitted, s->data[0].permitted),
                       word(s->data[1].inheritable, s->data[0].inheritable), bounding);
}

} // namespace tagmem
