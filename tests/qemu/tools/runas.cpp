// SPDX-License-Identifier: Apache-2.0
//
// tagmem-runas: run a command as another uid/gid inside vmkit guests.
//
// Why: busybox cannot switch user (its setpriv lacks uid changes), and the
// guests have no su/sudo, yet the permission tests must open tag nodes as an
// unprivileged user.
//
//   tagmem-runas UID GID[,SUPP_GID...] CMD [ARGS...]
//
// Supplementary groups are exactly the listed extra gids (none by default:
// setgroups(0)). Then setresgid and setresuid, checked, then execvp.

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <grp.h>
#include <sys/types.h>
#include <unistd.h>

namespace {

unsigned long parse_id(const std::string& s) {
    char* end = nullptr;
    errno = 0;
    unsigned long v = std::strtoul(s.c_str(), &end, 10);
    if (s.empty() || errno != 0 || *end != '\0') {
        std::fprintf(stderr, "tagmem-runas: bad id '%s'\n", s.c_str());
        std::exit(125);
    }
    return v;
}

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "tagmem-runas: %s: %s\n", what, std::strerror(errno));
    std::exit(125);
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 4) {
        std::fputs("usage: tagmem-runas UID GID[,SUPP_GID...] CMD [ARGS...]\n", stderr);
        return 125;
    }
    auto uid = static_cast<uid_t>(parse_id(argv[1]));
    std::vector<gid_t> gids;
    std::string list = argv[2];
    for (std::size_t pos = 0;;) {
        std::size_t comma = list.find(',', pos);
        gids.push_back(static_cast<gid_t>(parse_id(list.substr(pos, comma - pos))));
        if (comma == std::string::npos)
            break;
        pos = comma + 1;
    }
    gid_t gid = gids.front();
    if (::setgroups(gids.size() - 1, gids.data() + 1) != 0)
        fail("setgroups");
    if (::setresgid(gid, gid, gid) != 0)
        fail("setresgid");
    if (::setresuid(uid, uid, uid) != 0)
        fail("setresuid");
    if (::getuid() != uid || ::geteuid() != uid || ::getgid() != gid || ::getegid() != gid) {
        std::fputs("tagmem-runas: ids did not change\n", stderr);
        return 125;
    }
    ::execvp(argv[3], argv + 3);
    std::fprintf(stderr, "tagmem-runas: exec %s: %s\n", argv[3], std::strerror(errno));
    return 127;
}
