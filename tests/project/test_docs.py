"""Every section the code cites (``docs/<file>.md §N``) exists in the repository's own documents."""

from __future__ import annotations

import re

from tests.support.codefacts import ROOT


def _headings(doc: str) -> set[str]:
    """Section numbers of a document's headings: "## 5. Title" → "5", "### 9.1 Title" → "9.1"."""
    text = (ROOT / "docs" / doc).read_text()
    return {m.group(1) for m in re.finditer(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", text, re.MULTILINE)}


def _citations() -> list[tuple[str, str, str]]:
    """(file, document, section) for every citation in code, tests and the proto."""
    found = []
    paths = [*ROOT.glob("tack_*/**/*.py"), *ROOT.glob("tests/**/*.py"), *ROOT.glob("proto/**/*.proto")]
    for path in paths:
        text = path.read_text()
        for match in re.finditer(r"docs/([a-z-]+\.md) (§[0-9.]+(?:(?:-|, )§[0-9.]+)*)", text):
            for section in re.findall(r"§([0-9]+(?:\.[0-9]+)*)", match.group(2)):
                found.append((str(path.relative_to(ROOT)), match.group(1), section))
    return found


def test_every_cited_section_exists() -> None:
    """Each § the code cites is a numbered heading of that document in docs/."""
    citations = _citations()
    assert len(citations) > 15
    missing = [c for c in citations if c[2] not in _headings(c[1])]
    assert missing == []


def test_no_citation_points_outside_the_repository() -> None:
    """No code cites the research copies outside the repository (../shared) by bare file name."""
    stray = []
    for path in [*ROOT.glob("tack_*/**/*.py"), *ROOT.glob("tests/**/*.py")]:
        for line in path.read_text().splitlines():
            if re.search(r"(?<!docs/)\b(?:buildkite-api|tangled-protocol|tangled-ci-api)\.md", line):
                stray.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert stray == []
