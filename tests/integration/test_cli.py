# SPDX-License-Identifier: Apache-2.0
"""The tagmem and tagmemfs command lines: every command's help, exit codes,
and agreement between --help and the man pages."""
from __future__ import annotations

import json
import re
import subprocess

import hostgen as hg
import pytest
from conftest import ROOT, TAGMEM, TAGMEMFS, run_tagmem


@pytest.mark.parametrize("args", [[], ["list"], ["show"], ["resolve"], ["wait"], ["watch"],
                                  ["cdi"], ["online"], ["offline"], ["vm-args"]])
def test_every_command_has_help(args):
    r = run_tagmem(*args, "--help")
    assert r.returncode == 0, r.stderr
    assert "Usage" in r.stdout or "USAGE" in r.stdout.upper()


def test_version():
    r = run_tagmem("--version")
    assert r.returncode == 0 and re.fullmatch(r"tagmem \d+\.\d+\.\d+\n", r.stdout)


@pytest.mark.parametrize("args", [["frobnicate"], ["list", "--no-such-option"],
                                  ["show"], ["resolve"], ["resolve", "a", "b"]])
def test_bad_usage_exits_2(args):
    r = run_tagmem(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)


@pytest.mark.parametrize("text", ["nope", "aaaaaaaa-0000-4000-8000-00000000000", "",
                                  "{aaaaaaaa-0000-4000-8000-00000000000a}",
                                  "aaaaaaaa00000-4000-8000-00000000000a",
                                  "gggggggg-0000-4000-8000-00000000000a"])
def test_malformed_tag_exits_2_with_a_clear_message(make_host, text):
    make_host("dcd")
    for cmd in ("show", "resolve"):
        r = run_tagmem(cmd, text)
        assert r.returncode == 2 and "not a UUID" in r.stderr and r.stdout == ""


def test_resolve_prints_the_path_for_scripts(make_host):
    make_host("mixed")
    r = run_tagmem("resolve", hg.TAG_NV1)
    assert (r.returncode, r.stdout, r.stderr) == (0, "/dev/dax1.1\n", "")
    # any case spelling of the tag resolves
    assert run_tagmem("resolve", hg.TAG_A.upper()).stdout == "/dev/dax0.0\n"


def test_resolve_unknown_tag_exits_3(make_host):
    make_host("dcd")
    r = run_tagmem("resolve", "12345678-0000-4000-8000-000000000000")
    assert r.returncode == 3 and "no device carries tag" in r.stderr and r.stdout == ""


def test_resolve_offered_tag_exits_5(make_host):
    make_host("dcd")
    r = run_tagmem("resolve", hg.TAG_C)  # extents carry it, no device claimed them
    assert r.returncode == 5 and "no dax device has claimed" in r.stderr


def test_show_json_is_the_list_entry(make_host):
    make_host("mixed")
    listed = {t["tag"]: t for t in json.loads(run_tagmem("list", "--json").stdout)["tags"]}
    for tag, entry in listed.items():
        shown = json.loads(run_tagmem("show", "--json", tag).stdout)
        assert shown == entry


def test_human_output_names_every_fact(make_host):
    make_host("conflict")
    r = run_tagmem("show", hg.TAG_CONFLICT)
    assert r.returncode == 0
    assert "conflict" in r.stdout and "/dev/dax0.0" in r.stdout and "/dev/dax1.0" in r.stdout
    listing = run_tagmem("list").stdout
    assert hg.TAG_CONFLICT in listing and "2 devices" in listing


def test_list_table_reports_rejections(make_host):
    make_host("malformed")
    out = run_tagmem("list").stdout
    assert "rejected: dax0.4: /dev/dax0.4 is 1:3" in out
    assert hg.TAG_GOOD in out


def _help_options(argv) -> set[str]:
    text = subprocess.run(argv + ["--help"], capture_output=True, text=True).stdout
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", text))


def _man_options(page) -> set[str]:
    """The long options the OPTIONS section of a man page defines."""
    text = (ROOT / "man" / page).read_text().replace("\\-", "-")
    section = text.split(".SH OPTIONS")[1].split("\n.SH ")[0]
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", section))


@pytest.mark.parametrize("argv,page", [
    ([str(TAGMEM)], "tagmem.1"),
    ([str(TAGMEM), "list"], "tagmem.1"),
    ([str(TAGMEM), "show"], "tagmem.1"),
    ([str(TAGMEM), "wait"], "tagmem.1"),
    ([str(TAGMEM), "watch"], "tagmem.1"),
    ([str(TAGMEM), "cdi"], "tagmem.1"),
    ([str(TAGMEM), "online"], "tagmem.1"),
    ([str(TAGMEM), "offline"], "tagmem.1"),
    ([str(TAGMEM), "vm-args"], "tagmem.1"),
    ([str(TAGMEM), "claim"], "tagmem.1"),
    ([str(TAGMEM), "unclaim"], "tagmem.1"),
    ([str(TAGMEM), "vm-attach"], "tagmem.1"),
    ([str(TAGMEM), "vm-detach"], "tagmem.1"),
    ([str(TAGMEMFS)], "tagmemfs.8"),
])
def test_man_page_documents_every_option(argv, page):
    missing = _help_options(argv) - _man_options(page)
    assert not missing, f"{page} lacks {sorted(missing)} that --help lists"


def test_man_page_options_exist():
    for argv, page in (([str(TAGMEM)], "tagmem.1"), ([str(TAGMEMFS)], "tagmemfs.8")):
        helped = set()
        subs = ([], ["list"], ["show"], ["resolve"], ["wait"], ["watch"], ["cdi"], ["online"],
                ["offline"], ["vm-args"], ["claim"], ["vm-attach"], ["vm-detach"])
        for sub in subs if page == "tagmem.1" else ([],):
            helped |= _help_options(argv + sub)
        stale = _man_options(page) - helped - {"--help"}
        assert not stale, f"{page} documents {sorted(stale)} that no --help knows"


def test_man_page_exit_codes_match_the_code():
    codes = dict(re.findall(r"kExit(\w+) = (\d+)",
                            (ROOT / "cli" / "exit_codes.hpp").read_text()))
    man = (ROOT / "man" / "tagmem.1").read_text()
    section = man.split(".SH EXIT STATUS")[1].split(".SH")[0]
    documented = set(re.findall(r"^\.B (\d+)$", section, re.M))
    assert documented == set(codes.values())


def test_tagmemfs_help_and_version():
    r = subprocess.run([str(TAGMEMFS), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "mountpoint" in r.stdout
    r = subprocess.run([str(TAGMEMFS), "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("tagmemfs ")
    r = subprocess.run([str(TAGMEMFS), "--log-level", "loud"], capture_output=True, text=True)
    assert r.returncode == 2


def test_mount_helper_options_agree_with_the_man_page_and_tagmemfs():
    """The options mount.tagmem turns into tagmemfs's own are the ones
    tagmemfs(8) MOUNTING lists, and each is an option tagmemfs --help knows."""
    script = (ROOT / "mount-helper" / "mount.tagmem.in").read_text()
    valued = set(re.findall(r"(?:^ *|\| )([a-z-]+)=\*", script.split('set -- # tagmemfs')[1],
                            re.M))
    flags = set(re.findall(r"^    ([a-z-]+)\)\n        set -- \"\$@\" (--[a-z-]+) ;;", script,
                           re.M))
    valued -= {"comment", "user", "users"}  # dropped or refused, not passed on
    man = (ROOT / "man" / "tagmemfs.8").read_text().replace("\\-", "-")
    section = man.split(".SH MOUNTING")[1].split("\n.SH ")[0]
    sentence = section.split("become the options of the same names")[0]
    assert set(re.findall(r"^\.BR? ([a-z-]+)=", sentence, re.M)) == valued
    assert flags == {("no-cdi", "--no-cdi")}
    assert ".B no-cdi\nbecomes\n.BR --no-cdi" in section
    helped = _help_options([str(TAGMEMFS)])
    assert {f"--{o}" for o in valued} | {f for _, f in flags} <= helped
