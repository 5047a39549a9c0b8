"""The documents travel with the code: every relative link in the README and docs/ resolves
(the file exists, and a `#fragment` names a heading of that file), and nothing in the project
points at documents outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*$", re.M)
CODE_BLOCK = re.compile(r"^```.*?^```", re.M | re.S)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower-case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\*|_(?=\W)|\[|\]\([^)]*\)", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(heading) for heading in HEADING.findall(CODE_BLOCK.sub("", path.read_text()))}


def links(path: Path) -> list[str]:
    return LINK.findall(CODE_BLOCK.sub("", path.read_text()))


def test_there_are_documents_to_check():
    assert (ROOT / "docs" / "api.md") in DOCUMENTS and (ROOT / "docs" / "architecture.md") in DOCUMENTS


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(document: Path):
    broken = []
    for target in links(document):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto: not ours to check offline
        file_part, _, fragment = target.partition("#")
        linked = (document.parent / file_part).resolve() if file_part else document
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target}: no heading #{fragment} in {linked.relative_to(ROOT)}")
    assert not broken, f"{document.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_nothing_points_outside_the_repository():
    outside = re.compile(r"\.\./shared|(?<![\w/.])(?:API|DESIGN|SEED)\.md")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for pattern in ("*.md", "**/*.py", "**/*.md", ".ci/*")
        for path in ROOT.glob(pattern)
        if ".venv" not in path.parts and path.is_file()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if outside.search(line)
    ]
    assert not offenders, "references to documents outside the repository: " + ", ".join(sorted(set(offenders)))
