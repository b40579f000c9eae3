"""Cleaning Buildkite job logs into lines (tack_provider_kit.logtext)."""

from __future__ import annotations

from tack_provider_kit import logtext


SHA = "5cf26b27727eb6a0ebdc139cf6d39907372cf565"
BASE_ENV = {
    "TACK_BUILDKITE_TOKEN": "bk-secret",
    "TACK_BUILDKITE_ORG": "acme",
    "TACK_BUILDKITE_WEBHOOK_SECRET": "s",
}


# Log cleaning

RAW_LOG = (
    b"\x1b_bk;t=1767225601000\x07~~~ Running global environment hook\r\n"
    b"\x1b_bk;t=1767225601002\x07\x1b[90m$\x1b[0m pytest -q\r\n"
    b"\x1b_bk;t=1767225602500\x07--- :pytest: unit tests\r\n"
    b"\x1b_bk;t=1767225603000\x07Downloading 10%\rDownloading 50%\x1b_bk;t=1767225604100\x07\rDownloading 100%\r\n"
    b"\x1b_bk;t=1767225605000\x07\x1b[2K\x1b[1Gstep one\x1b[K\x1b_bk;t=1767225606000\x07 done\r\r\n"
    b"bk;t=1767225607000\x07old-agent marker \xc3\xa9t\xc3\xa9\r\n"
    b"\x1b]8;;https://example.org\x07link\x1b]8;;\x07 and \x1b[1;32mgreen\x1b[0m\r\n"
    b"\r\n"
    b"\x1b_bk;t=1767225608000\x07\x1b[32m3 passed\x1b[0m in 0.41s\r\r\n"
    b"no newline at the end"
)
CLEAN = [
    ("~~~ Running global environment hook", 1767225601000),
    ("$ pytest -q", 1767225601002),
    ("--- :pytest: unit tests", 1767225602500),
    ("Downloading 100%", 1767225603000),
    ("step one done", 1767225605000),
    ("old-agent marker été", 1767225607000),
    ("link and green", 1767225607000),
    ("", 1767225607000),
    ("3 passed in 0.41s", 1767225608000),
]


def _clean_all(chunks: list[bytes]) -> list[tuple[str, int | None]]:
    cleaner = logtext.LogCleaner()
    out = []
    for chunk in chunks:
        out.extend(cleaner.feed(chunk))
    out.extend(cleaner.flush())
    return [(line.text, line.ms) for line in out]


def test_log_cleaning() -> None:
    """Markers (line start, mid-line, ESC _ and bare), ANSI, CRLF, \\r\\r\\n and progress bars are cleaned."""
    assert _clean_all([RAW_LOG]) == [*CLEAN, ("no newline at the end", 1767225608000)]


def test_log_split_anywhere_gives_the_same_lines() -> None:
    """Feeding the log cut at every byte position (inside markers, escapes, UTF-8) changes nothing."""
    whole = _clean_all([RAW_LOG])
    for cut in range(1, len(RAW_LOG)):
        assert _clean_all([RAW_LOG[:cut], RAW_LOG[cut:]]) == whole, cut
    assert _clean_all([bytes([b]) for b in RAW_LOG]) == whole


def test_partial_line_is_held_until_complete() -> None:
    """A line is emitted only once its newline arrives; flush emits the unterminated rest."""
    cleaner = logtext.LogCleaner()
    assert cleaner.feed(b"\x1b_bk;t=5\x07hel") == []
    assert [line.text for line in cleaner.feed(b"lo\r")] == []
    assert [(line.text, line.ms) for line in cleaner.feed(b"\nnext")] == [("hello", 5)]
    assert [line.text for line in cleaner.flush()] == ["next"]
    assert cleaner.flush() == []


def test_clean_line_controls() -> None:
    """Stray control bytes are dropped, tabs kept."""
    assert logtext.clean_line("a\tb\x07c\x08d\x1b").text == "a\tbcd"
