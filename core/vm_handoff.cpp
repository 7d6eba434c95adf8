// SPDX-License-Identifier: Apache-2.0
#include "vm_handoff.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <set>

namespace tagmem::vm {
namespace {

using nlohmann::json;

// The most QEMU puts below 4 GiB when RAM reaches 4 GiB (and so always here:
// the tags come on top of the guest's RAM): pc caps max-ram-below-4g at
// 3 GiB (gigabyte_align), q35 at 2 GiB.
std::uint64_t low_ram_cap(MachineFamily f) {
    return f == MachineFamily::pc ? 3 * kGiB : 2 * kGiB;
}

std::optional<MachineFamily> family_of(std::string_view machine) {
    if (machine == "pc" || machine.starts_with("pc-i440fx-"))
        return MachineFamily::pc;
    if (machine == "q35" || machine.starts_with("pc-q35-"))
        return MachineFamily::q35;
    return std::nullopt;
}

// Lenient readers, as in cli/format.cpp: tagmemfs of another version may
// add keys or leave some out.
std::string str(const json& j, const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}
std::optional<std::uint64_t> unum(const json& j, const char* key) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number_integer())
        return std::nullopt;
    if (it->is_number_unsigned())
        return it->get<std::uint64_t>();
    const auto v = it->get<std::int64_t>();
    return v < 0 ? std::nullopt : std::optional<std::uint64_t>(static_cast<std::uint64_t>(v));
}

std::string hex(std::uint64_t v) {
    return fmt::format("{:#x}", v);
}

std::string size_text(std::uint64_t bytes) {
    if (bytes % kGiB == 0)
        return fmt::format("{} GiB", bytes / kGiB);
    if (bytes % kMiB == 0)
        return fmt::format("{} MiB", bytes / kMiB);
    return fmt::format("{} bytes", bytes);
}

bool has_control_char(std::string_view s) {
    return std::any_of(s.begin(), s.end(),
                       [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

// JSON text that survives every consumer: invalid UTF-8 in a configured
// name is replaced rather than thrown about.
std::string dump(const json& j) {
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string xml_escape(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (char c : s) {
        switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '\'': out += "&apos;"; break;
        case '"': out += "&quot;"; break;
        default: out += c;
        }
    }
    return out;
}

std::string cpu_list(unsigned cpus) {
    return cpus == 1 ? std::string("0") : fmt::format("0-{}", cpus - 1);
}

// The machine options: the layout rule (docs/vm.md): node 0 fills low memory
// up to the cap, the rest of it (if any) starts at 4 GiB, the tags follow.
std::string machine_option(const Plan& p) {
    return fmt::format("max-ram-below-4g={}", p.ram_below_4g);
}

std::string file_backend(const PlacedTag& t) {
    std::string s = fmt::format("memory-backend-file,id={},size={},mem-path={},share=on",
                                t.object_id, t.size, qemu_escape(t.mem_path));
    // QEMU maps a backend at 2 MiB alignment by itself; a devdax of larger
    // alignment refuses a mapping that is not aligned to it.
    if (t.align > kGuestAlign)
        s += fmt::format(",align={}", t.align);
    return s;
}

std::string numa_node(const PlacedTag& t) {
    return fmt::format("node,nodeid={},memdev={}", t.guest_node, t.object_id);
}

constexpr std::string_view kRamId = "tagmem-ram";

} // namespace

Checked check_tag(const json& tags, const Uuid& wanted) {
    const std::string want = wanted.str();
    const json* found = nullptr;
    if (tags.is_array())
        for (const auto& t : tags)
            if (t.is_object() && str(t, "tag") == want) {
                found = &t;
                break;
            }
    if (!found)
        return {nullptr,
                Refused{Refusal::unknown_tag, fmt::format("no device carries tag {}", want)}};
    const json& t = *found;
    const std::string state = str(t, "state");
    const std::string reason = str(t, "reason");
    auto refuse = [&](Refusal why, const std::string& what) {
        return Checked{nullptr,
                       Refused{why, fmt::format("tag {} cannot go to a guest: {}", want, what)}};
    };
    if (state == "conflict")
        return refuse(Refusal::conflict, reason.empty() ? "several devices claim it" : reason);
    if (state != "ready")
        return refuse(Refusal::not_usable,
                      fmt::format("it is {}{}", state.empty() ? "in no known state" : state,
                                  reason.empty() ? "" : ": " + reason));
    const std::string device = str(t, "device");
    auto devs = t.find("devices");
    if (device.empty() || devs == t.end() || !devs->is_array() || devs->size() != 1 ||
        !(*devs)[0].is_object())
        return refuse(Refusal::not_usable, "it is not one device");
    const json& d = (*devs)[0];
    if (str(d, "mode") != "devdax")
        return refuse(Refusal::not_usable, fmt::format("its device {} is in mode {}, not devdax",
                                                       device, str(d, "mode")));
    auto size = unum(t, "size");
    if (!size || *size == 0)
        return refuse(Refusal::not_usable, fmt::format("its device {} has no size", device));
    return {found, std::nullopt};
}

json host_json(const json& t) {
    const json& d = t["devices"][0];
    json host = {{"device", str(t, "device")}, {"source", str(t, "source")}};
    auto node = d.find("numa_node");
    host["numa_node"] = node != d.end() && node->is_number_integer() ? node->get<int>() : -1;
    // Only the keys the contract names, only as non-negative integers.
    if (auto p = d.find("performance"); p != d.end() && p->is_object()) {
        json perf = json::object();
        for (const char* key :
             {"read_latency_ns", "write_latency_ns", "read_bandwidth_mbps", "write_bandwidth_mbps"})
            if (auto v = unum(*p, key))
                perf[key] = *v;
        if (!perf.empty())
            host["performance"] = std::move(perf);
    }
    return host;
}

Result<std::uint64_t> parse_size(std::string_view text) {
    auto bad = [&](std::string_view why) {
        return make_error(EINVAL, fmt::format("bad size '{}': {}", text, why));
    };
    std::uint64_t n = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (end == text.data())
        return bad("expected a number, e.g. 512M or 4G");
    if (ec == std::errc::result_out_of_range)
        return bad("too large");
    std::string_view suffix(end, static_cast<std::size_t>(text.data() + text.size() - end));
    static constexpr std::array<std::pair<std::string_view, unsigned>, 13> units = {{
        {"", 20},
        {"B", 0},
        {"K", 10},
        {"M", 20},
        {"G", 30},
        {"T", 40},
        {"KiB", 10},
        {"MiB", 20},
        {"GiB", 30},
        {"TiB", 40},
        {"k", 10},
        {"m", 20},
        {"g", 30},
    }};
    for (const auto& [name, shift] : units)
        if (suffix == name) {
            if (shift && n > (~std::uint64_t{0} >> shift))
                return bad("too large");
            return n << shift;
        }
    return bad("unknown unit (B, K, M, G, T; a plain number is MiB, as for QEMU's -m)");
}

std::string qemu_escape(std::string_view value) {
    std::string out;
    out.reserve(value.size());
    for (char c : value) {
        out += c;
        if (c == ',')
            out += ',';
    }
    return out;
}

std::string shell_quote(std::string_view arg) {
    const bool plain = !arg.empty() && std::all_of(arg.begin(), arg.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               std::string_view("_@%+=:,./-").find(c) != std::string_view::npos;
    });
    if (plain)
        return std::string(arg);
    std::string out = "'";
    for (char c : arg)
        out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

std::optional<Refused> ram_refusal(std::uint64_t ram_size) {
    if (ram_size != 0 && ram_size % kGuestAlign == 0)
        return std::nullopt;
    return Refused{
        Refusal::usage,
        fmt::format("guest RAM of {} bytes is not a positive multiple of 2 MiB", ram_size)};
}

std::optional<Refused> mount_point_refusal(const std::string& mount_point) {
    if (mount_point.starts_with('/') && !has_control_char(mount_point))
        return std::nullopt;
    return Refused{
        Refusal::usage,
        fmt::format("mount point '{}' is not an absolute path without control characters",
                    mount_point)};
}

std::vector<Refused> duplicate_tag_refusals(const std::vector<Uuid>& wanted) {
    std::vector<Refused> out;
    std::set<Uuid> seen;
    for (const auto& w : wanted)
        if (!seen.insert(w).second)
            out.push_back(
                {Refusal::usage,
                 fmt::format("tag {} is asked for twice; one guest sees a tag once", w.str())});
    return out;
}

PlanResult plan_handoff(const json& tags, const std::vector<Uuid>& wanted, const GuestSpec& guest) {
    PlanResult r;
    auto refuse = [&](Refusal why, std::string message) {
        r.refused.push_back(Refused{why, std::move(message)});
    };
    const auto family = family_of(guest.machine);
    if (!family)
        refuse(Refusal::usage,
               fmt::format("machine '{}' is neither pc (pc-i440fx-*) nor q35 (pc-q35-*)",
                           guest.machine));
    if (auto no = ram_refusal(guest.ram_size))
        r.refused.push_back(std::move(*no));
    if (guest.cpus == 0)
        refuse(Refusal::usage, "a guest needs at least one CPU");
    if (auto no = mount_point_refusal(guest.mount_point))
        r.refused.push_back(std::move(*no));
    if (wanted.empty())
        refuse(Refusal::usage, "no tag given");
    if (wanted.size() > kMaxTags)
        refuse(Refusal::layout,
               fmt::format("{} tags asked for; a guest takes at most {} (QEMU has 128 NUMA nodes, "
                           "node 0 is the guest's RAM)",
                           wanted.size(), kMaxTags));
    for (auto& no : duplicate_tag_refusals(wanted))
        r.refused.push_back(std::move(no));
    if (!r.refused.empty())
        return r;

    Plan p;
    p.guest = guest;
    p.family = *family;
    p.ram_below_4g = std::min(guest.ram_size, low_ram_cap(*family));
    // Node 0's rest above 4 GiB, then the tags.
    std::uint64_t next = k4GiB + (guest.ram_size - p.ram_below_4g);
    if (next < k4GiB) // ram_size near 2^64
        refuse(Refusal::layout, "guest RAM overflows the address space");
    std::uint64_t total = guest.ram_size;
    unsigned node = 1;
    std::string mount = guest.mount_point;
    while (mount.ends_with('/'))
        mount.pop_back();
    for (const auto& w : wanted) {
        auto c = check_tag(tags, w);
        if (c.refused) {
            r.refused.push_back(std::move(*c.refused));
            continue;
        }
        const json& t = *c.tag;
        PlacedTag pt;
        pt.tag = w.str();
        pt.name = str(t, "name");
        pt.shareable = t.value("shareable", false);
        pt.size = *unum(t, "size");
        pt.align = unum(t, "align").value_or(0);
        pt.guest_node = node++;
        pt.object_id = fmt::format("tagmem{}", pt.guest_node);
        pt.mem_path = fmt::format("{}/{}/data", mount, pt.tag);
        pt.host = host_json(t);
        pt.access = t.value("access", json::object());
        if (pt.size % kGuestAlign != 0) {
            refuse(Refusal::layout,
                   fmt::format("tag {} has {} bytes, not a multiple of 2 MiB: the guest kernel "
                               "cannot make a dax device of it",
                               pt.tag, pt.size));
            continue;
        }
        pt.guest_start = next;
        if (next + pt.size < next || total + pt.size < total || next + pt.size > guest.phys_limit) {
            refuse(Refusal::layout,
                   fmt::format("tag {} ({}) would end at {}, beyond {}, where QEMU moves guest "
                               "RAM above 4 GiB to 1 TiB or refuses to start",
                               pt.tag, size_text(pt.size),
                               next + pt.size < next ? std::string("2^64") : hex(next + pt.size),
                               size_text(guest.phys_limit)));
            next = guest.phys_limit; // every later tag is beyond it too
            continue;
        }
        next += pt.size;
        total += pt.size;
        if (pt.align > kGuestAlign && pt.guest_start % pt.align != 0)
            p.warnings.push_back(fmt::format(
                "tag {}: its guest range starts at {}, not on its device's {} alignment; the "
                "guest still maps it, with 2 MiB pages (order larger tags first to avoid this)",
                pt.tag, hex(pt.guest_start), size_text(pt.align)));
        if (!pt.shareable)
            p.warnings.push_back(
                fmt::format("tag {} is not shareable: give it to one guest at a time", pt.tag));
        p.tags.push_back(std::move(pt));
    }
    if (!r.refused.empty())
        return r;
    p.total = total;
    if (const auto params = kernel_params(p); params.size() > kMaxKernelParamBytes)
        refuse(Refusal::layout,
               fmt::format("the guest kernel parameters for {} tags take {} bytes, more than the "
                           "{} of its 2048-byte command line tagmem allows them",
                           p.tags.size(), params.size(), kMaxKernelParamBytes));
    if (const auto item = handoff_json(p); item.size() > kFwCfgMax)
        refuse(Refusal::layout, fmt::format("the fw_cfg item would take {} bytes, more than {}",
                                            item.size(), kFwCfgMax));
    if (r.refused.empty())
        r.plan = std::move(p);
    return r;
}

std::string handoff_json(const Plan& p) {
    json tags = json::array();
    for (const auto& t : p.tags)
        tags.push_back({{"tag", t.tag},
                        {"name", t.name},
                        {"shareable", t.shareable},
                        {"size", t.size},
                        {"guest_start", t.guest_start},
                        {"guest_node", t.guest_node},
                        {"host", t.host}});
    return dump({{"format", "tagmem-handoff"}, {"version", 1}, {"tags", std::move(tags)}});
}

std::string kernel_params(const Plan& p) {
    std::string out;
    for (const auto& t : p.tags) {
        if (!out.empty())
            out += ' ';
        out += fmt::format("memmap={}%{}-1+0xefffffff", hex(t.size), hex(t.guest_start));
    }
    return out;
}

std::vector<std::string> qemu_args(const Plan& p) {
    std::vector<std::string> a = {
        "-machine", fmt::format("{},{}", p.guest.machine, machine_option(p)),
        "-m",       fmt::format("{}M", p.total / kMiB),
        "-smp",     std::to_string(p.guest.cpus),
        "-object",  fmt::format("memory-backend-ram,id={},size={}", kRamId, p.guest.ram_size),
        "-numa",    fmt::format("node,nodeid=0,cpus={},memdev={}", cpu_list(p.guest.cpus), kRamId),
    };
    for (const auto& t : p.tags) {
        a.insert(a.end(), {"-object", file_backend(t), "-numa", numa_node(t)});
    }
    a.push_back("-fw_cfg");
    a.push_back(fmt::format("name={},string={}", kFwCfgName, qemu_escape(handoff_json(p))));
    return a;
}

std::string libvirt_xml(const Plan& p) {
    const std::uint64_t ram_kib = p.guest.ram_size / 1024;
    std::string x;
    x += "<!-- tagmem vm-args: merge into the guest's domain XML (virsh edit), see docs/vm.md.\n";
    x += fmt::format("     Laid out for machine {} ({}): use that machine type in <os><type>.\n",
                     p.guest.machine, p.family == MachineFamily::pc ? "i440fx" : "q35");
    x += "     The guest kernel needs on its command line (<os><cmdline> with direct kernel\n";
    x += "     boot, else the guest's own bootloader configuration):\n";
    x += fmt::format("       {}\n", kernel_params(p));
    x += "     QEMU opens each tag's data as libvirt's QEMU user: the tag's access, AppArmor\n";
    x += "     and cgroup_device_acl must let it (docs/vm.md). -->\n";
    x += "<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\n";
    x += fmt::format("  <memory unit='KiB'>{}</memory>\n", ram_kib);
    x += fmt::format("  <vcpu placement='static'>{}</vcpu>\n", p.guest.cpus);
    x += "  <cpu>\n    <numa>\n";
    x += fmt::format("      <cell id='0' cpus='{}' memory='{}' unit='KiB'/>\n",
                     cpu_list(p.guest.cpus), ram_kib);
    x += "    </numa>\n  </cpu>\n";
    x += "  <qemu:commandline>\n";
    auto arg = [&](const std::string& v) {
        x += fmt::format("    <qemu:arg value='{}'/>\n", xml_escape(v));
    };
    // libvirt has no element for a NUMA cell backed by a given file, nor for
    // max-ram-below-4g; -m and -machine given again are merged by QEMU, the
    // last value winning.
    arg("-machine");
    arg(machine_option(p));
    arg("-m");
    arg(fmt::format("{}M", p.total / kMiB));
    for (const auto& t : p.tags) {
        arg("-object");
        arg(file_backend(t));
        arg("-numa");
        arg(numa_node(t));
    }
    // Not <sysinfo type='fwcfg'><entry>: libvirt 9.0 passes the entry to
    // QEMU XML-escaped (&quot;) and with its commas unescaped, so QEMU
    // refuses it ("Invalid parameter"); seen under libvirtd 9.0. The
    // passthrough carries exactly the plain QEMU argument.
    arg("-fw_cfg");
    arg(fmt::format("name={},string={}", kFwCfgName, qemu_escape(handoff_json(p))));
    x += "  </qemu:commandline>\n";
    x += "</domain>\n";
    return x;
}

json plan_json(const Plan& p) {
    json tags = json::array();
    for (const auto& t : p.tags)
        tags.push_back({{"tag", t.tag},
                        {"name", t.name},
                        {"size", t.size},
                        {"guest_start", t.guest_start},
                        {"guest_node", t.guest_node},
                        {"object_id", t.object_id},
                        {"mem_path", t.mem_path}});
    return {{"qemu", qemu_args(p)},
            {"kernel_cmdline", kernel_params(p)},
            {"fw_cfg", {{"name", kFwCfgName}, {"content", json::parse(handoff_json(p))}}},
            {"layout",
             {{"machine", p.guest.machine},
              {"ram_size", p.guest.ram_size},
              {"ram_below_4g", p.ram_below_4g},
              {"total", p.total},
              {"tags", std::move(tags)}}},
            {"warnings", p.warnings}};
}

std::optional<bool> may_open_rw(const json& access, uid_t uid, const std::vector<gid_t>& groups) {
    auto owner = unum(access, "uid");
    auto group = unum(access, "gid");
    const std::string mode_text = str(access, "mode");
    unsigned mode = 0;
    auto [end, ec] =
        std::from_chars(mode_text.data(), mode_text.data() + mode_text.size(), mode, 8);
    if (!owner || !group || mode_text.empty() || ec != std::errc() ||
        end != mode_text.data() + mode_text.size() || mode > 07777)
        return std::nullopt;
    if (uid == 0)
        return true; // CAP_DAC_OVERRIDE
    // As the kernel checks: the owner's bits for the owner, else the
    // group's for a member, else the others'.
    unsigned bits = mode & 07;
    if (*owner == uid)
        bits = (mode >> 6) & 07;
    else if (std::find(groups.begin(), groups.end(), static_cast<gid_t>(*group)) != groups.end())
        bits = (mode >> 3) & 07;
    return (bits & 06) == 06;
}

} // namespace tagmem::vm
