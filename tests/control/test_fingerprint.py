"""The workflow definition fingerprint, as stock spindles compute it (tack_control.ingest.fingerprint)."""

from __future__ import annotations

import hashlib

from hypothesis import given, strategies as strat

from tack_control.ingest.fingerprint import definition_names, describe_definition_hash


# Vectors of the research notes (§4 of 14-ci-api.md), computed with the stock formula.
EMPTY = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
A_AND_B = "sha256:263e3059ad551044d0d941dbf12006af90b6908b9deccf68f54ff7c14e15d282"
A_ONLY = "sha256:e4fbf9b4c33a12135e75ccfdd28d7f499b95399203299c3524c1db9796973b80"


def test_the_stock_vectors() -> None:
    """No files, two files and one file give the stock spindle's hashes."""
    assert describe_definition_hash([]) == EMPTY
    assert describe_definition_hash([("a.yml", "engine: dummy\n"), ("b.yml", "engine: nixery\n")]) == A_AND_B
    assert describe_definition_hash([("a.yml", b"engine: dummy\n")]) == A_ONLY


def test_the_framing_is_name_nul_length_content_in_name_order() -> None:
    """Written out by hand: name, NUL, 8-byte little-endian length, content, for each file sorted by name."""
    files = [("z.yml", b"\x00\xff raw"), ("b.yml", b"")]
    expected = hashlib.sha256(
        b"b.yml\x00" + (0).to_bytes(8, "little") + b"z.yml\x00" + (6).to_bytes(8, "little") + b"\x00\xff raw"
    ).hexdigest()
    assert describe_definition_hash(files) == "sha256:" + expected


@given(strat.dictionaries(strat.text(min_size=1, max_size=20), strat.binary(max_size=50), max_size=6))
def test_order_does_not_matter_and_any_change_does(files: dict[str, bytes]) -> None:
    """The hash ignores the files' order; renaming or editing a file changes it."""
    items = list(files.items())
    assert describe_definition_hash(items) == describe_definition_hash(items[::-1])
    if items:
        name, content = items[0]
        assert describe_definition_hash([(name, content + b"x"), *items[1:]]) != describe_definition_hash(
            items
        )
        if name + "_" not in files:
            assert describe_definition_hash([(name + "_", content), *items[1:]]) != describe_definition_hash(
                items
            )


def test_names_are_listed_in_git_tree_order() -> None:
    """Bytewise order of the UTF-8 names, as a git tree lists plain files."""
    assert definition_names([("b.yml", ""), ("B.yml", ""), ("ä.yml", ""), ("a.yml", "")]) == [
        "B.yml",
        "a.yml",
        "b.yml",
        "ä.yml",
    ]
