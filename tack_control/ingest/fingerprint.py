"""The fingerprint of a commit's workflow definitions, exactly as stock spindles compute it.

``sh.tangled.ci.describeWorkflowDefinition`` answers it as ``hash``; the
appview compares hashes of two commits (a pull request's base and head) to
tell whether a fork changed its CI, so tack's value must equal a stock
spindle's for the same files. The stock algorithm: the files of
``.tangled/workflows`` sorted by name (bytewise), and for each, fed to one
SHA-256: the name's bytes, a NUL byte, the content's length as 8 bytes little
endian, the content. Names are bare file names; contents are the raw blob bytes.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable


_LENGTH = struct.Struct("<Q")


def describe_definition_hash(files: Iterable[tuple[str, str | bytes]]) -> str:
    """``"sha256:<hex>"`` of the workflow files ``(name, content)``, in any order.

    Pass the raw blob bytes where you have them: text is encoded as UTF-8,
    which is the blob only when the blob was valid UTF-8.
    """
    encoded = sorted(
        (name.encode(), content.encode() if isinstance(content, str) else content) for name, content in files
    )
    digest = hashlib.sha256()
    for name, content in encoded:
        digest.update(name)
        digest.update(b"\x00")
        digest.update(_LENGTH.pack(len(content)))
        digest.update(content)
    return "sha256:" + digest.hexdigest()


def definition_names(files: Iterable[tuple[str, str | bytes]]) -> list[str]:
    """The workflow file names in git tree order (bytewise), as stock spindles list them."""
    return sorted((name for name, _ in files), key=str.encode)
