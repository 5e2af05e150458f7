"""The documentation: README.md within its 200 lines, every relative link of the Markdown files
resolving to a file (and a heading, for an anchor), and every flag a documented command line
gives being one that command takes."""
import contextlib
import io
import re

import pytest

from cli_runs import REPO, entry_point

DOCS = sorted([REPO / "README.md", REPO / "CHANGELOG.md", REPO / "tuning" / "README.md",
               *(REPO / "docs").rglob("*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.S | re.M)
COMMAND = re.compile(r"python (build_engine\.py|inference\.py|tools/\w+\.py)([^#\n]*)")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_]*")


def anchors(path) -> set:
    """GitHub's anchors for the headings of a Markdown file."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", FENCE.sub("", path.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def links():
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if not re.match(r"[a-z]+:", target):
                yield doc, target


def test_the_readme_is_read_in_five_minutes():
    assert len((REPO / "README.md").read_text().splitlines()) <= 200


@pytest.mark.parametrize("doc, target", list(links()), ids=lambda v: str(v).replace(str(REPO) + "/", ""))
def test_every_relative_link_resolves(doc, target):
    path, _, anchor = target.partition("#")
    resolved = (doc.parent / path).resolve() if path else doc
    assert resolved.exists(), f"{doc.relative_to(REPO)}: {target} does not exist"
    if anchor:
        assert resolved.is_file() and anchor in anchors(resolved), f"{doc.relative_to(REPO)}: no heading #{anchor}"


def documented_commands() -> dict:
    """{(script, subcommand or None): every flag the docs give it} from their code blocks."""
    found = {}
    for doc in DOCS:
        for block in FENCE.findall(doc.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                for script, rest in COMMAND.findall(line):
                    words = rest.split()
                    sub = words[0] if words and not words[0].startswith(("-", "[")) and script.endswith("lmdb_tool.py") \
                        else None
                    found.setdefault((script, sub), set()).update(FLAG.findall(rest))
    return found


def help_text(script: str, sub: str | None) -> str:
    name = script.removesuffix(".py").removeprefix("tools/")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        entry_point(name)([*([sub] if sub else []), "--help"])
    return out.getvalue()


@pytest.mark.parametrize("script, sub", sorted(documented_commands(), key=str))
def test_every_documented_flag_is_one_the_command_takes(script, sub):
    text = help_text(script, sub)
    unknown = sorted(flag for flag in documented_commands()[(script, sub)] if not re.search(rf"{flag}\b", text))
    assert not unknown, f"{script} {sub or ''}: the docs give {unknown}, which it does not take"
