// SPDX-License-Identifier: Apache-2.0
#include "config.hpp"

#include "account_text.hpp"
#include "host_os.hpp"
#include "sysfs_value.hpp"

#include <fmt/format.h>
#include <ini.h>

#include <algorithm>
#include <charconv>
#include <set>

namespace tagmem {
namespace {

constexpr std::string_view kTagPrefix = "tag ";
constexpr std::string_view kDefaults = "defaults";

Result<ClaimMode> parse_claim(std::string_view value) {
    if (value == "auto")
        return ClaimMode::automatic;
    if (value == "manual")
        return ClaimMode::manual;
    return make_error(EINVAL, "expected auto or manual");
}
constexpr std::size_t kMaxNameLength = 128;

struct ParseState {
    Config config;
    std::string current_section; // as written, to notice a new section
    std::optional<TagConfig> current;
    bool current_bad = false;
    std::set<std::string> keys_seen;
    std::set<Uuid> sections_seen;
    bool in_defaults = false;      // the [defaults] section, not a tag's
    bool defaults_seen = false;    // [defaults] may appear once
    int online_shareable_line = 0; // where online-shareable = allow was said
    int lines_read = 0;            // counted by read_ini_line

    void error(int line, const std::string& what) {
        config.errors.push_back(fmt::format("{}:{}: {}", config.origin, line, what));
    }

    void finish_section() {
        if (current && !current_bad && current->online_shareable && !current->online) {
            // Alone it would read as an opt-in that is not one.
            error(online_shareable_line, "online-shareable = allow without online = allow: "
                                         "the second setting only extends the first");
            current_bad = true;
        }
        online_shareable_line = 0;
        if (current && !current_bad && !in_defaults)
            config.tags.emplace(current->tag, *current);
        current.reset();
        current_bad = false;
        in_defaults = false;
        keys_seen.clear();
    }

    void start_section(const std::string& section, int line) {
        finish_section();
        current_section = section;
        if (section == kDefaults) {
            current = TagConfig{}; // holds no tag: finish_section() drops it
            current->line = line;
            in_defaults = true;
            if (defaults_seen) {
                error(line, "[defaults] is given twice");
                current_bad = true;
            }
            defaults_seen = true;
            return;
        }
        if (!section.starts_with(kTagPrefix)) {
            error(line, fmt::format("unknown section [{}] (expected [tag <uuid>] or [defaults])",
                                    escaped_for_display(section)));
            current = TagConfig{};
            current_bad = true;
            return;
        }
        auto uuid = Uuid::parse(trim_attr(std::string_view(section).substr(kTagPrefix.size())));
        current = TagConfig{};
        current->line = line;
        if (!uuid) {
            error(line, fmt::format("section [{}]: {}", escaped_for_display(section),
                                    escaped_for_display(uuid.error().message)));
            current_bad = true;
            return;
        }
        if (uuid->is_nil()) {
            error(line,
                  "section [tag 00000000-...]: the nil UUID means 'no tag' and cannot be one");
            current_bad = true;
            return;
        }
        if (!sections_seen.insert(*uuid).second) {
            error(line, fmt::format("tag {} is configured twice", uuid->str()));
            current_bad = true;
            return;
        }
        current->tag = *uuid;
    }

    void key(const std::string& name, const std::string& value, int line) {
        TagConfig& t = *current;
        if (!keys_seen.insert(name).second) {
            error(line, fmt::format("'{}' given twice in this section", escaped_for_display(name)));
            current_bad = true;
            return;
        }
        auto bad = [&](const std::string& why) {
            error(line, fmt::format("{} = {}: {}", escaped_for_display(name),
                                    escaped_for_display(value), why));
            current_bad = true;
        };
        if (in_defaults) {
            if (name != "claim")
                return bad("unknown key in [defaults] (known: claim)");
            auto mode = parse_claim(value);
            if (!mode)
                return bad(mode.error().message);
            config.claim = *mode;
            return;
        }
        if (name == "name") {
            if (value.empty() || value.size() > kMaxNameLength)
                return bad(fmt::format("a name must be 1 to {} characters", kMaxNameLength));
            if (auto text = check_display_text(value); !text)
                return bad("a name must be printable UTF-8: " + text.error().message);
            t.name = value;
        } else if (name == "shareable") {
            auto b = parse_bool(value);
            if (!b)
                return bad(b.error().message);
            t.shareable = *b;
        } else if (name == "owner" || name == "group") {
            if (value.empty())
                return bad(fmt::format("empty {}", name));
            if (auto ok = check_account_name(value); !ok)
                return bad(ok.error().message);
            (name == "owner" ? t.owner : t.group) = value;
        } else if (name == "mode") {
            auto m = parse_mode(value);
            if (!m)
                return bad(m.error().message);
            t.mode = *m;
        } else if (name == "match-range") {
            auto r = parse_phys_range(value);
            if (!r)
                return bad(r.error().message);
            t.match_range = *r;
        } else if (name == "match-node") {
            auto n = parse_i64(value);
            if (!n || *n < 0 || *n > 4095)
                return bad("a NUMA node number from 0 to 4095");
            t.match_node = static_cast<int>(*n);
        } else if (name == "online" || name == "online-shareable") {
            auto allow = parse_allow(value);
            if (!allow)
                return bad(allow.error().message);
            if (name == "online") {
                t.online = *allow;
            } else {
                t.online_shareable = *allow;
                online_shareable_line = line;
            }
        } else if (name == "claim") {
            auto mode = parse_claim(value);
            if (!mode)
                return bad(mode.error().message);
            t.claim = *mode;
        } else {
            bad("unknown key (known: name, shareable, owner, group, mode, match-range, "
                "match-node, online, online-shareable, claim)");
        }
    }
};

// Feeds inih one line at a time, and does what Debian's inih build cannot:
// it counts lines (no INI_HANDLER_LINENO), notices every section header on
// its own line (inih reports sections only with their first key), strips
// indentation (inih would take an indented key for a continuation line), and
// refuses lines longer than inih's fixed buffer instead of letting them be
// split in two.
struct LineReader {
    std::string_view rest;
    ParseState* state;
};

constexpr std::size_t kMaxLine = 190; // inih's INI_MAX_LINE is 200, with room to spare

char* read_ini_line(char* out, int size, void* stream) noexcept {
    auto& r = *static_cast<LineReader*>(stream);
    if (r.rest.empty())
        return nullptr;
    auto& st = *r.state;
    auto nl = r.rest.find('\n');
    std::string_view line = r.rest.substr(0, nl);
    r.rest.remove_prefix(nl == std::string_view::npos ? r.rest.size() : nl + 1);
    ++st.lines_read;
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t'))
        line.remove_prefix(1);
    if (!line.empty() && line.back() == '\r')
        line.remove_suffix(1);
    try {
        if (line.size() > kMaxLine || line.size() + 2 > static_cast<std::size_t>(size)) {
            st.error(st.lines_read, fmt::format("line too long (at most {} characters)", kMaxLine));
            if (st.current)
                st.current_bad = true;
            line = {};
        } else if (line.find('\0') != std::string_view::npos) {
            // inih reads C strings: the rest of the line would silently vanish.
            st.error(st.lines_read, "a NUL byte in the line");
            if (st.current)
                st.current_bad = true;
            line = {};
        } else if (line.starts_with('[')) {
            auto close = line.find(']');
            if (close != std::string_view::npos)
                st.start_section(std::string(trim_attr(line.substr(1, close - 1))), st.lines_read);
        }
    } catch (...) {
        return nullptr; // out of memory: inih ends the parse
    }
    line.copy(out, line.size());
    out[line.size()] = '\n';
    out[line.size() + 1] = '\0';
    return out;
}

int on_ini_entry(void* user, const char*, const char* name, const char* value) noexcept {
    // inih calls back from C: nothing may throw through it.
    try {
        auto& st = *static_cast<ParseState*>(user);
        const int line = st.lines_read;
        if (!st.current) {
            st.error(line, fmt::format("'{}' outside of any [tag <uuid>] section",
                                       escaped_for_display(name)));
            return 1;
        }
        if (!st.current_bad) // a bad section's keys would only repeat its error
            st.key(name, value ? value : "", line);
        return 1;
    } catch (...) {
        return 0;
    }
}

} // namespace

Result<mode_t> parse_mode(std::string_view raw) {
    auto text = trim_attr(raw);
    if (text.empty() || text.size() > 4 || text.find_first_not_of("01234567") != std::string::npos)
        return make_error(EINVAL, fmt::format("not an octal mode such as 0600: '{}'", text));
    unsigned v = 0; // at most 4 octal digits: no overflow
    std::from_chars(text.data(), text.data() + text.size(), v, 8);
    if (v > 0777)
        return make_error(EINVAL, fmt::format("mode {} has setuid/setgid/sticky bits; only "
                                              "permission bits (0000-0777) are allowed",
                                              text));
    return static_cast<mode_t>(v);
}

Result<bool> parse_allow(std::string_view raw) {
    auto text = trim_attr(raw);
    if (text == "allow")
        return true;
    if (text == "deny")
        return false;
    return make_error(EINVAL, fmt::format("expected allow or deny, not '{}'", text));
}

Result<PhysRange> parse_phys_range(std::string_view raw) {
    auto text = trim_attr(raw);
    auto dash = text.find('-');
    if (dash == std::string_view::npos)
        return make_error(EINVAL, fmt::format("not a range START-END: '{}'", text));
    auto start = parse_u64(text.substr(0, dash));
    auto end = parse_u64(text.substr(dash + 1));
    if (!start || !end)
        return make_error(EINVAL, fmt::format("not a range START-END: '{}'", text));
    if (*end < *start)
        return make_error(EINVAL, fmt::format("range ends before it starts: '{}'", text));
    return PhysRange{*start, *end};
}

Config parse_config(std::string_view text, std::string origin) {
    ParseState st;
    st.config.origin = std::move(origin);
    LineReader reader{text, &st};
    int rc = ini_parse_stream(&read_ini_line, &reader, &on_ini_entry, &st);
    st.finish_section();
    if (rc != 0) {
        // A line inih could not read: nothing in the file can be trusted.
        Config broken;
        broken.origin = st.config.origin;
        broken.errors = std::move(st.config.errors);
        broken.errors.push_back(rc > 0 ? fmt::format("{}:{}: syntax error (expected "
                                                     "'[section]' or 'key = value')",
                                                     broken.origin, rc)
                                       : fmt::format("{}: cannot be parsed", broken.origin));
        return broken;
    }
    return std::move(st.config);
}

Config load_config(const std::string& path, bool missing_ok, HostOs& os) {
    auto text = os.read_file_bounded(path, kMaxConfigBytes);
    if (!text) {
        Config empty;
        empty.origin = path;
        if (!(missing_ok && text.error().code == ENOENT))
            empty.errors.push_back(text.error().message);
        return empty;
    }
    Config config = parse_config(*text, path);
    for (auto it = config.tags.begin(); it != config.tags.end();) {
        const TagConfig& t = it->second;
        std::string problem;
        if (t.owner) {
            if (auto uid = os.user_id(*t.owner); !uid)
                problem = uid.error().message;
        }
        if (t.group && problem.empty()) {
            if (auto gid = os.group_id(*t.group); !gid)
                problem = gid.error().message;
        }
        if (!problem.empty()) {
            config.errors.push_back(
                fmt::format("{}:{}: [tag {}]: {}", path, t.line, t.tag.str(), problem));
            it = config.tags.erase(it);
        } else {
            ++it;
        }
    }
    return config;
}

} // namespace tagmem
