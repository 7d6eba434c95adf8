// SPDX-License-Identifier: Apache-2.0
#include "fake_host_os.hpp"

#include "account_text.hpp"
#include "daxctl_scan.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <mutex>

namespace tagmem::fake {
namespace {

std::vector<std::string> split_path(const std::string& path) {
    std::vector<std::string> parts;
    std::size_t i = 0;
    while (i < path.size()) {
        auto slash = path.find('/', i);
        if (slash == std::string::npos)
            slash = path.size();
        if (slash > i)
            parts.push_back(path.substr(i, slash - i));
        i = slash + 1;
    }
    return parts;
}

std::string parent_of(const std::string& path) {
    auto slash = path.rfind('/');
    return slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
}

std::string base_of(const std::string& path) {
    auto slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string join(const std::string& dir, const std::string& name) {
    return dir == "/" ? "/" + name : dir + "/" + name;
}

Error errno_error(int err, std::string_view what, const std::string& path) {
    return make_error(err, fmt::format("{} {}: {}", what, path, std::strerror(err)));
}

std::string hex(std::uint64_t v) {
    return fmt::format("{:#x}\n", v);
}

std::string dec(std::int64_t v) {
    return fmt::format("{}\n", v);
}

const std::string& key_of(const std::string& path) {
    return path;
}
template <typename V> const std::string& key_of(const std::pair<const std::string, V>& entry) {
    return entry.first;
}

} // namespace

std::string normalize_path(const std::string& path) {
    std::vector<std::string> out;
    for (auto& part : split_path(path)) {
        if (part == ".")
            continue;
        if (part == "..") {
            if (!out.empty())
                out.pop_back();
            continue;
        }
        out.push_back(part);
    }
    std::string result;
    for (auto& part : out)
        result += "/" + part;
    return result.empty() ? "/" : result;
}

std::string relative_link(const std::string& link_path, const std::string& target) {
    auto from = split_path(normalize_path(parent_of(normalize_path(link_path))));
    auto to = split_path(normalize_path(target));
    std::size_t common = 0;
    while (common < from.size() && common < to.size() && from[common] == to[common])
        ++common;
    std::string rel;
    for (std::size_t i = common; i < from.size(); ++i)
        rel += rel.empty() ? ".." : "/..";
    for (std::size_t i = common; i < to.size(); ++i)
        rel += (rel.empty() ? "" : "/") + to[i];
    return rel.empty() ? "." : rel;
}

FakeHostOs::FakeHostOs() {
    dirs_.insert("/");
    users_["root"] = 0;
    groups_["root"] = 0;
}

void FakeHostOs::add_dir(const std::string& raw) {
    std::string path = normalize_path(raw);
    while (dirs_.insert(path).second && path != "/")
        path = parent_of(path);
}

void FakeHostOs::add_file(const std::string& raw, std::string content) {
    std::string path = normalize_path(raw);
    add_dir(parent_of(path));
    files_[path] = std::move(content);
}

void FakeHostOs::add_symlink(const std::string& raw, std::string target) {
    std::string path = normalize_path(raw);
    add_dir(parent_of(path));
    links_[path] = std::move(target);
}

void FakeHostOs::add_relative_symlink(const std::string& path, const std::string& absolute_target) {
    add_symlink(path, relative_link(path, absolute_target));
}

void FakeHostOs::add_node(const std::string& raw, NodeType type, DevNumber rdev) {
    std::string path = normalize_path(raw);
    add_dir(parent_of(path));
    nodes_[path] = NodeInfo{type, rdev};
}

void FakeHostOs::remove(const std::string& raw) {
    std::string path = normalize_path(raw);
    std::string prefix = path + "/";
    auto below = [&](const std::string& p) { return p == path || p.starts_with(prefix); };
    std::erase_if(files_, [&](const auto& kv) { return below(kv.first); });
    std::erase_if(links_, [&](const auto& kv) { return below(kv.first); });
    std::erase_if(nodes_, [&](const auto& kv) { return below(kv.first); });
    std::erase_if(dirs_, [&](const std::string& d) { return d != "/" && below(d); });
}

Result<std::string> FakeHostOs::resolve(const std::string& path, bool follow_last) const {
    if (path.empty() || path[0] != '/')
        return make_error(EINVAL, fmt::format("fake host: relative path '{}'", path));
    std::deque<std::string> todo;
    for (auto& p : split_path(path))
        todo.push_back(p);
    std::string current = "/";
    int hops = 0;
    while (!todo.empty()) {
        std::string part = todo.front();
        todo.pop_front();
        if (part == ".")
            continue;
        if (part == "..") {
            current = parent_of(current);
            continue;
        }
        if (!is_dir(current)) {
            bool known = files_.contains(current) || nodes_.contains(current);
            return errno_error(known ? ENOTDIR : ENOENT, "cannot resolve", path);
        }
        std::string next = join(current, part);
        const bool last = todo.empty();
        auto link = links_.find(next);
        if (link != links_.end() && (!last || follow_last)) {
            if (++hops > 40)
                return errno_error(ELOOP, "cannot resolve", path);
            auto target = split_path(link->second);
            for (auto it = target.rbegin(); it != target.rend(); ++it)
                todo.push_front(*it);
            if (!link->second.empty() && link->second[0] == '/')
                current.assign(1, '/'); // (not = "/": GCC 12 -Wrestrict false positive)
            continue;
        }
        current = next;
    }
    return current;
}

std::optional<int> FakeHostOs::injected(Op op, const std::string& given,
                                        const std::string& resolved) const {
    auto under = [](const std::string& path, const std::string& prefix) {
        return prefix == "/" || path == prefix || path.starts_with(prefix + "/");
    };
    std::optional<int> err;
    auto given_hit = failures_.find(given);
    auto resolved_hit = failures_.find(resolved);
    if (given_hit != failures_.end())
        err = given_hit->second;
    else if (resolved_hit != failures_.end())
        err = resolved_hit->second;
    else
        for (const auto& f : call_failures_)
            if ((f.ops & op) && (under(given, f.prefix) || under(resolved, f.prefix))) {
                err = f.err;
                break;
            }
    return err;
}

Result<std::optional<unsigned>> FakeHostOs::dax_char_major() {
    std::lock_guard lock(mutex_);
    if (auto err = injected(op_major, "/proc/devices", "/proc/devices"))
        return errno_error(*err, "cannot open", "/proc/devices");
    return dax_major_;
}

Result<std::string> FakeHostOs::link_target(const std::string& path) {
    std::lock_guard lock(mutex_);
    if (auto err = injected(op_resolve, path, path))
        return errno_error(*err, "cannot read link", path);
    return real_path(path);
}

Result<std::vector<DaxDevice>> FakeHostOs::daxctl_devices() {
    std::lock_guard lock(mutex_);
    if (auto err = injected(op_daxctl, "/sys", "/sys"))
        return errno_error(*err, "libdaxctl: cannot start", "");
    std::vector<DaxDevice> out;
    auto names = list_dir("/sys/bus/dax/devices");
    if (!names)
        return out; // libdaxctl finds no region: an empty list, no error
    for (const auto& name : *names) {
        auto d = read_dax_device(name, *this);
        if (d && !daxctl_drops_.contains(name))
            out.push_back(std::move(*d));
    }
    return out;
}

Result<std::string> FakeHostOs::read_file(const std::string& path) {
    std::lock_guard lock(mutex_);
    reads_.push_back(path);
    auto where = resolve(path, false); // O_NOFOLLOW on the last component
    if (auto err = injected(op_read, path, where ? *where : path))
        return errno_error(*err, "cannot open", path);
    if (!where)
        return where.error();
    if (links_.contains(*where))
        return errno_error(ELOOP, "cannot open", path);
    if (is_dir(*where))
        return errno_error(EISDIR, "cannot read", path);
    if (nodes_.contains(*where))
        return errno_error(EACCES, "cannot open", path);
    auto it = files_.find(*where);
    if (it == files_.end())
        return errno_error(ENOENT, "cannot open", path);
    return it->second;
}

Status FakeHostOs::write_file(const std::string& path, std::string_view text) {
    std::lock_guard lock(mutex_);
    auto where = resolve(path, false);
    if (auto err = injected(op_write, path, where ? *where : path))
        return errno_error(*err, "cannot write", path);
    if (!where)
        return where.error();
    auto it = files_.find(*where);
    if (it == files_.end())
        return errno_error(is_dir(*where) ? EISDIR : ENOENT, "cannot open", path);
    it->second = std::string(text);
    writes_.emplace_back(path, std::string(text));
    return Ok{};
}

Result<std::string> FakeHostOs::real_path(const std::string& path) {
    std::lock_guard lock(mutex_);
    auto where = resolve(path, true);
    if (auto err = injected(op_resolve, path, where ? *where : path))
        return errno_error(*err, "cannot resolve", path);
    if (!where)
        return where.error();
    if (!is_dir(*where) && !files_.contains(*where) && !nodes_.contains(*where))
        return errno_error(ENOENT, "cannot resolve", path);
    return *where;
}

Result<std::vector<std::string>> FakeHostOs::list_dir(const std::string& path) {
    std::lock_guard lock(mutex_);
    ++list_counts_[path];
    auto where = resolve(path, true);
    if (auto err = injected(op_list, path, where ? *where : path))
        return errno_error(*err, "cannot list", path);
    if (!where)
        return where.error();
    if (!is_dir(*where)) {
        bool known = files_.contains(*where) || nodes_.contains(*where);
        return errno_error(known ? ENOTDIR : ENOENT, "cannot list", path);
    }
    std::set<std::string> names;
    auto collect = [&](const std::string& p) {
        if (p != "/" && parent_of(p) == *where)
            names.insert(base_of(p));
    };
    for (const auto& [p, _] : files_)
        collect(p);
    for (const auto& d : dirs_)
        collect(d);
    for (const auto& [p, _] : links_)
        collect(p);
    for (const auto& [p, _] : nodes_)
        collect(p);
    // "In no set order": hand them out reversed so nobody relies on sorting.
    return std::vector<std::string>(names.rbegin(), names.rend());
}

Result<NodeInfo> FakeHostOs::lstat_node(const std::string& path) {
    std::lock_guard lock(mutex_);
    auto where = resolve(path, false);
    if (auto err = injected(op_stat, path, where ? *where : path))
        return errno_error(*err, "cannot stat", path);
    if (!where)
        return where.error();
    if (links_.contains(*where))
        return NodeInfo{NodeType::symlink, {}};
    if (auto it = nodes_.find(*where); it != nodes_.end())
        return it->second;
    if (is_dir(*where))
        return NodeInfo{NodeType::directory, {}};
    if (files_.contains(*where))
        return NodeInfo{NodeType::regular, {}};
    return errno_error(ENOENT, "cannot stat", path);
}

Result<NodeInfo> FakeHostOs::stat_node(const std::string& path) {
    {
        std::lock_guard lock(mutex_);
        stats_.push_back(path);
    }
    auto real = real_path(path);
    if (!real)
        return real.error();
    return lstat_node(*real);
}

Result<NodeInfo> FakeHostOs::stat_cached(const std::string& path) {
    if (stat_cached_hook_)
        stat_cached_hook_(path);
    {
        std::lock_guard lock(mutex_);
        cached_stats_.push_back(path);
    }
    auto real = real_path(path);
    if (!real)
        return real.error();
    return lstat_node(*real);
}

Result<std::string> FakeHostOs::read_link(const std::string& path) {
    std::lock_guard lock(mutex_);
    auto where = resolve(path, false);
    if (auto err = injected(op_resolve, path, where ? *where : path))
        return errno_error(*err, "cannot read link", path);
    if (!where)
        return where.error();
    auto it = links_.find(*where);
    if (it == links_.end())
        return errno_error(EINVAL, "cannot read link", path);
    return it->second;
}

Status FakeHostOs::make_dir(const std::string& path) {
    std::lock_guard lock(mutex_);
    if (auto err = injected(op_write, path, path))
        return errno_error(*err, "cannot make", path);
    if (is_dir(path) || files_.contains(path) || links_.contains(path) || nodes_.contains(path))
        return errno_error(EEXIST, "cannot make", path);
    if (!is_dir(parent_of(path)))
        return errno_error(ENOENT, "cannot make", path);
    dirs_.insert(path);
    return Ok{};
}

Status FakeHostOs::remove_dir(const std::string& path) {
    std::lock_guard lock(mutex_);
    if (auto err = injected(op_write, path, path))
        return errno_error(*err, "cannot remove", path);
    if (!is_dir(path))
        return errno_error(ENOENT, "cannot remove", path);
    const std::string below = path + "/";
    auto has_child = [&](const auto& paths) {
        auto it = paths.lower_bound(below);
        return it != paths.end() && std::string_view(key_of(*it)).starts_with(below);
    };
    if (has_child(dirs_) || has_child(files_) || has_child(links_) || has_child(nodes_))
        return errno_error(ENOTEMPTY, "cannot remove", path);
    dirs_.erase(path);
    return Ok{};
}

bool FakeHostOs::exists(const std::string& path) {
    return lstat_node(path).ok();
}

Result<uid_t> FakeHostOs::user_id(const std::string& name) {
    std::lock_guard lock(mutex_);
    if (auto err = injected(op_lookup, "/etc/passwd", "/etc/passwd"))
        return errno_error(*err, "cannot look up", name);
    if (is_account_number(name))
        return parse_account_id(name); // the real parser: numbers are not faked
    auto it = users_.find(name);
    if (it == users_.end())
        return make_error(ENOENT, fmt::format("unknown user '{}'", name));
    return it->second;
}

Result<gid_t> FakeHostOs::group_id(const std::string& name) {
    std::lock_guard lock(mutex_);
    if (auto err = injected(op_lookup, "/etc/group", "/etc/group"))
        return errno_error(*err, "cannot look up", name);
    if (is_account_number(name))
        return parse_account_id(name);
    auto it = groups_.find(name);
    if (it == groups_.end())
        return make_error(ENOENT, fmt::format("unknown group '{}'", name));
    return it->second;
}

std::string FakeHostOs::dev_char_link(const DaxDevice& dev) {
    return fmt::format("/sys/dev/char/{}:{}", dev.devno.major, dev.devno.minor);
}

DaxDevice FakeHostOs::add_device_at(const std::string& region_dir, const DaxSpec& spec) {
    DaxDevice d;
    d.name = fmt::format("dax{}.{}", spec.region, spec.id);
    d.region_id = spec.region;
    d.id = spec.id;
    unsigned minor = spec.minor ? *spec.minor : next_minor_;
    next_minor_ = std::max(next_minor_, minor + 1);
    d.devno = DevNumber{kDaxMajor, minor};
    d.size = spec.size;
    d.align = spec.align;
    d.resource = spec.resource;
    d.target_node = spec.target_node;
    d.mode = spec.mode;
    d.ranges = {PhysRange{spec.resource, spec.resource + spec.size - 1}};
    d.set_region_path(normalize_path(region_dir));

    // The bus and its drivers.
    add_dir("/sys/bus/dax/devices");
    add_dir("/sys/bus/dax/drivers/device_dax");
    add_dir("/sys/bus/dax/drivers/kmem");

    // The region (libdaxctl reads dax_region/{id,size,align}).
    add_file(d.region_path() + "/dax_region/id", dec(spec.region));
    add_file(d.region_path() + "/dax_region/size", dec(static_cast<std::int64_t>(spec.size)));
    add_file(d.region_path() + "/dax_region/align", dec(static_cast<std::int64_t>(spec.align)));

    // The device directory.
    const std::string& dir = d.sysfs_path();
    add_dir(dir);
    add_file(dir + "/dev", fmt::format("{}:{}\n", d.devno.major, d.devno.minor));
    add_file(dir + "/size", fmt::format("{}\n", spec.size));
    add_file(dir + "/align", fmt::format("{}\n", spec.align));
    add_file(dir + "/resource", hex(spec.resource));
    add_file(dir + "/target_node", dec(spec.target_node));
    add_file(dir + "/numa_node", dec(spec.numa_node));
    if (spec.with_mapping) {
        add_file(dir + "/mapping0/start", hex(spec.resource));
        add_file(dir + "/mapping0/end", hex(spec.resource + spec.size - 1));
        add_file(dir + "/mapping0/page_offset", hex(0));
    }
    add_relative_symlink(dir + "/subsystem", "/sys/bus/dax");
    if (spec.mode == DevMode::devdax)
        add_relative_symlink(dir + "/driver", "/sys/bus/dax/drivers/device_dax");
    else if (spec.mode == DevMode::system_ram)
        add_relative_symlink(dir + "/driver", "/sys/bus/dax/drivers/kmem");

    add_relative_symlink("/sys/bus/dax/devices/" + d.name, dir);
    add_relative_symlink(dev_char_link(d), dir);
    add_char_device(d.dev_path(), d.devno.major, d.devno.minor);
    return d;
}

DaxDevice FakeHostOs::add_hmem_device(const DaxSpec& spec) {
    return add_device_at(fmt::format("/sys/devices/platform/hmem.{}", spec.region), spec);
}

DaxDevice FakeHostOs::add_dcd_device(const DaxSpec& spec, const std::string& uuid_attr) {
    auto cxl_region =
        fmt::format("/sys/devices/platform/ACPI0017:00/root0/decoder0.0/region{}", spec.region);
    auto dax_region = fmt::format("{}/dax_region{}", cxl_region, spec.region);
    add_file(cxl_region + "/mode", "dynamic_ram_1\n");
    add_relative_symlink(fmt::format("/sys/bus/cxl/devices/region{}", spec.region), cxl_region);
    add_relative_symlink(fmt::format("/sys/bus/cxl/devices/dax_region{}", spec.region), dax_region);
    DaxDevice d = add_device_at(dax_region, spec);
    add_file(d.sysfs_path() + "/uuid", uuid_attr + "\n");
    return d;
}

void FakeHostOs::add_dcd_extent(const DaxDevice& dev, int extent, std::uint64_t offset,
                                std::uint64_t length, const std::optional<std::string>& uuid) {
    auto dir = fmt::format("{}/extent{}.{}", dev.region_path(), dev.region_id, extent);
    add_file(dir + "/offset", hex(offset));
    add_file(dir + "/length", hex(length));
    if (uuid)
        add_file(dir + "/uuid", *uuid + "\n");
}

DaxDevice FakeHostOs::add_nvdimm_device(const DaxSpec& spec, const std::string& namespace_uuid,
                                        const std::string& infoblock_uuid, int namespace_id) {
    auto region = fmt::format("/sys/devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0012:00/ndbus0/region{}",
                              spec.region);
    auto ns = fmt::format("{}/namespace{}.{}", region, spec.region, namespace_id);
    add_file(ns + "/uuid", namespace_uuid + "\n");
    add_file(ns + "/mode", "dax\n");
    add_file(ns + "/size", fmt::format("{}\n", spec.size));
    add_file(ns + "/numa_node", dec(spec.numa_node));
    auto nd_dax = fmt::format("{}/dax{}.{}", region, spec.region, namespace_id);
    add_file(nd_dax + "/namespace", fmt::format("namespace{}.{}\n", spec.region, namespace_id));
    add_file(nd_dax + "/uuid", infoblock_uuid + "\n");
    add_file(nd_dax + "/align", fmt::format("{}\n", spec.align));
    return add_device_at(nd_dax, spec);
}

void FakeHostOs::set_node_performance(int node, const Performance& perf) {
    auto base = fmt::format("/sys/devices/system/node/node{}/access0/initiators/", node);
    add_dir(base);
    auto put = [&](const char* name, const std::optional<std::uint64_t>& v) {
        if (v)
            add_file(base + name, fmt::format("{}\n", *v));
    };
    put("read_latency", perf.read_latency_ns);
    put("write_latency", perf.write_latency_ns);
    put("read_bandwidth", perf.read_bandwidth_mbps);
    put("write_bandwidth", perf.write_bandwidth_mbps);
}

Status FakeHostOs::enable_devdax(const std::string& name) {
    std::lock_guard lock(mutex_);
    enabled_.push_back(name);
    if (enable_error_)
        return make_error(enable_error_, fmt::format("enabling {}: injected failure", name));
    auto dir = resolve("/sys/bus/dax/devices/" + name, true);
    if (!dir)
        return dir.error();
    add_relative_symlink(*dir + "/driver", "/sys/bus/dax/drivers/device_dax");
    return Ok{};
}

} // namespace tagmem::fake
