"""Reading and checking a builds.sr.ht build manifest from a workflow, free of I/O (docs/sourcehut-api.md §5).

A manifest comes as YAML text (a block scalar) or as a mapping written straight into the workflow. It
is parsed by :mod:`tack_common.safe_yaml`, its aliases written out within a budget, and must be a mapping with an ``image`` and a non-empty
``tasks`` list of one-key mappings (task name → script), task names being lower-case letters, digits
``_`` and ``-``; ``environment:`` may not name ``TANGLED_*`` variables (tack's). The keys builds.sr.ht knows are checked for their shapes; unknown keys are refused: builds.sr.ht
ignores them, so a misspelt key would silently do nothing. Errors read ``tack.sourcehut.manifest.tasks[1]: ...``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tack_common import safe_yaml
from tack_provider_kit.provider import InvalidArgument


WHERE = "tack.sourcehut.manifest"
MAX_MANIFEST_BYTES = 16384  # the size of builds.sr.ht's manifest column
MAX_TASKS = 100
MAX_VALUES = 20_000
"""Values a manifest may expand to: far more than 16384 bytes can hold without YAML aliases."""
MAX_INT_BITS = 1024
TASK_NAME = re.compile(r"[a-z0-9_-]{1,128}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
RESERVED_ENV_PREFIX = "TANGLED_"
KEYS = (
    "image",
    "arch",
    "packages",
    "repositories",
    "sources",
    "environment",
    "secrets",
    "tasks",
    "triggers",
    "artifacts",
    "oauth",
    "shell",
)


@dataclass(frozen=True)
class Manifest:
    """A checked manifest: its values, and its tasks' names in order."""

    data: dict[str, Any]

    @property
    def task_names(self) -> list[str]:
        """The tasks' names, in the order they run."""
        return [next(iter(task)) for task in self.data["tasks"]]


def _strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{where}: must be a list of strings")
    return value


def _tasks(value: object) -> None:
    where = f"{WHERE}.tasks"
    if not isinstance(value, list) or not value:
        raise InvalidArgument(f"{where}: required, a non-empty list of tasks (each `- name: script`)")
    if len(value) > MAX_TASKS:
        raise InvalidArgument(f"{where}: at most {MAX_TASKS} tasks")
    seen: set[str] = set()
    for i, task in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(task, Mapping) or len(task) != 1:
            raise InvalidArgument(f"{at}: each task must be a mapping of one name to its script")
        name, script = next(iter(task.items()))
        if not isinstance(name, str) or TASK_NAME.fullmatch(name) is None:
            raise InvalidArgument(
                f"{at}: task name {name!r} must be 1-128 lower-case letters, digits, '_' or '-'"
            )
        if name in seen:
            raise InvalidArgument(f"{at}: task {name!r} appears twice")
        seen.add(name)
        if not isinstance(script, str):
            raise InvalidArgument(f"{at}.{name}: the script must be a string")


def _environment(value: object) -> None:
    where = f"{WHERE}.environment"
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{where}: must be a mapping of names to values")
    for name, item in value.items():
        if not isinstance(name, str) or ENV_NAME.fullmatch(name) is None:
            raise InvalidArgument(f"{where}: {name!r} is not an environment variable name")
        if name.startswith(RESERVED_ENV_PREFIX):
            raise InvalidArgument(f"{where}.{name}: {RESERVED_ENV_PREFIX}* variables are set by tack")
        scalar = (str, int, float, bool)
        if not isinstance(item, scalar) and not (
            isinstance(item, list) and all(isinstance(v, scalar) for v in item)
        ):
            raise InvalidArgument(f"{where}.{name}: must be a string, number, boolean or a list of them")


def check(data: object) -> Manifest:
    """Check a decoded manifest's shape; InvalidArgument names the key at fault."""
    if not isinstance(data, Mapping):
        raise InvalidArgument(f"{WHERE}: must be a mapping (a build manifest), not {type(data).__name__}")
    for key in data:
        if key not in KEYS:
            raise InvalidArgument(f"{WHERE}.{key}: not a manifest key (known: {', '.join(KEYS)})")
    image = data.get("image")
    if not isinstance(image, str) or not image.strip():
        raise InvalidArgument(f"{WHERE}.image: required, the build image (e.g. alpine/edge)")
    _tasks(data.get("tasks"))
    for key in ("arch", "oauth"):
        if key in data and not isinstance(data[key], str):
            raise InvalidArgument(f"{WHERE}.{key}: must be a string")
    for key in ("packages", "sources", "secrets", "artifacts"):
        if key in data:
            _strings(data[key], f"{WHERE}.{key}")
    if "environment" in data:
        _environment(data["environment"])
    if "repositories" in data and not isinstance(data["repositories"], Mapping):
        raise InvalidArgument(f"{WHERE}.repositories: must be a mapping of names to repository lines")
    if "triggers" in data and (
        not isinstance(data["triggers"], list) or not all(isinstance(t, Mapping) for t in data["triggers"])
    ):
        raise InvalidArgument(f"{WHERE}.triggers: must be a list of mappings")
    if "shell" in data and not isinstance(data["shell"], bool):
        raise InvalidArgument(f"{WHERE}.shell: must be true or false")
    return Manifest(dict(data))


def _expanded(value: object, budget: list[int], depth: int = 0) -> object:
    """A copy without shared parts: aliases are written out, so none reaches builds.sr.ht and the size check
    sees the real size; InvalidArgument for aliases that expand past MAX_VALUES values, recurse, or nest too deep,
    and for integers too large to write back."""
    budget[0] -= 1
    if budget[0] < 0:
        raise InvalidArgument(f"{WHERE}: expands to more than {MAX_VALUES} values (YAML aliases?)")
    if depth > safe_yaml.MAX_DEPTH:
        raise InvalidArgument(
            f"{WHERE}: nested deeper than {safe_yaml.MAX_DEPTH} levels (recursive YAML aliases?)"
        )
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise InvalidArgument(f"{WHERE}: an integer is larger than {MAX_INT_BITS} bits")
    if isinstance(value, Mapping):
        return {_expanded(k, budget, depth + 1): _expanded(v, budget, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_expanded(v, budget, depth + 1) for v in value]
    return value


def load(value: object) -> Manifest:
    """The workflow's ``manifest``: YAML text or a mapping, parsed safely and checked."""
    if isinstance(value, str):
        if not value.strip():
            raise InvalidArgument(f"{WHERE}: empty (write the build manifest as a YAML block or mapping)")
        try:
            _, data = safe_yaml.parse(value, MAX_MANIFEST_BYTES, "manifest")
        except safe_yaml.UnsafeYAMLError as exc:
            raise InvalidArgument(f"{WHERE}: {exc}") from None
        if data is None:
            raise InvalidArgument(f"{WHERE}: empty (write the build manifest as a YAML block or mapping)")
        return check(_expanded(data, [MAX_VALUES]))
    if value is None:
        raise InvalidArgument(
            f"{WHERE}: required (the builds.sr.ht build manifest, as YAML text or a mapping)"
        )
    return check(_expanded(value, [MAX_VALUES]))
